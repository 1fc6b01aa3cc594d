using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>The two xenstore reads the guest agent's tree needs (a fake in tests).</summary>
public interface IXenStoreTree
{
    /// <summary>The value at <paramref name="path"/>, or null when there is none.</summary>
    string? Read(string path);

    /// <summary>The names of <paramref name="path"/>'s children, or null when the path does not exist.</summary>
    IReadOnlyList<string>? List(string path);
}

/// <summary>
/// What a guest agent (xe-guest-utilities, the Windows PV tools) publishes in its domain's
/// xenstore tree, read as xenopsd reads it: the same subtrees to the same depths, a byte quota so
/// a guest cannot make the toolstack read without end, and PV drivers detected once any of the
/// guest's frontends is connected.
/// </summary>
public static class XenGuestAgent
{
    /// <summary>Bytes of keys and values read at most per domain (xenopsd's default: 25 MiB).</summary>
    public const int QuotaBytes = 25 * 1024 * 1024;

    /// <summary>xenbus' Connected state, which a frontend reaches only with a PV driver behind it.</summary>
    private const string XenbusConnected = "4";

    // (subtree, subtrees left out, how many directory levels below it are read)
    private static readonly (string Root, string[] Excludes, int Depth)[] s_roots =
    [
        ("control", [], 0),
        ("feature/hotplug", [], 0),
        ("xenserver/attr", [], 3),
        // Hotfix lists can fill the quota on their own.
        ("attr", ["attr/os/hotfixes"], 3),
        ("drivers", [], 0),
        ("data", [], 0),
        ("data/service", [], 1),
        ("data/pvs_target", [], 0),
    ];

    /// <summary>The agent's data for domain <paramref name="domid"/>; null when the guest has published nothing and no PV driver connected.</summary>
    public static GuestAgentData? Read(IXenStoreTree store, uint domid)
    {
        var home = $"/local/domain/{domid}";
        var tree = new Dictionary<string, string>(StringComparer.Ordinal);
        var quota = QuotaBytes;
        foreach (var (root, excludes, depth) in s_roots)
        {
            Walk(store, home, root, excludes, depth, tree, ref quota);
        }
        var connected = PvDriversConnected(store, home);
        return tree.Count == 0 && !connected ? null : new GuestAgentData(tree, connected);
    }

    private static void Walk(IXenStoreTree store, string home, string path, string[] excludes, int depth,
        Dictionary<string, string> tree, ref int quota)
    {
        if (quota <= 0 || excludes.Contains(path, StringComparer.Ordinal))
        {
            return;
        }
        if (store.Read($"{home}/{path}") is { Length: > 0 } value)
        {
            tree[path] = value;
            quota -= path.Length + value.Length;
        }
        // At depth 0 the entries are still read, but not descended into.
        if (depth < 0 || store.List($"{home}/{path}") is not { } children)
        {
            return;
        }
        foreach (var child in children.Where(c => c.Length > 0))
        {
            Walk(store, home, $"{path}/{child}", excludes, depth - 1, tree, ref quota);
        }
    }

    private static bool PvDriversConnected(IXenStoreTree store, string home) =>
        (store.List($"{home}/device") ?? []).Any(kind =>
            (store.List($"{home}/device/{kind}") ?? []).Any(id => store.Read($"{home}/device/{kind}/{id}/state") == XenbusConnected));
}
