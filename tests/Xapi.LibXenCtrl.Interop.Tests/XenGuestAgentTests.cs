namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>The guest agent's data read from a domain's xenstore tree, as xenopsd reads it.</summary>
public class XenGuestAgentTests
{
    /// <summary>A xenstore tree of full paths to values; directories are implied by their children.</summary>
    private sealed class Tree(Dictionary<string, string> values) : IXenStoreTree
    {
        public List<string> Reads { get; } = [];

        public string? Read(string path)
        {
            Reads.Add(path);
            return values.TryGetValue(path, out var value) ? value : values.Keys.Any(k => k.StartsWith(path + "/", StringComparison.Ordinal)) ? "" : null;
        }

        public IReadOnlyList<string>? List(string path)
        {
            var children = values.Keys.Where(k => k.StartsWith(path + "/", StringComparison.Ordinal))
                .Select(k => k[(path.Length + 1)..].Split('/')[0]).Distinct().ToList();
            return children.Count == 0 && !values.ContainsKey(path) ? null : children;
        }
    }

    [Test]
    public void What_the_agent_published_is_read_relative_to_the_domain_and_a_connected_frontend_means_PV_drivers()
    {
        var tree = new Tree(new()
        {
            ["/local/domain/7/data/os_uname"] = "6.1.0-56-amd64",
            ["/local/domain/7/data/os_distro"] = "busybox",
            ["/local/domain/7/attr/vif/0/ipv4/0"] = "10.0.0.2",
            ["/local/domain/7/attr/PVAddons/MajorVersion"] = "9",
            ["/local/domain/7/control/feature-balloon"] = "1",
            ["/local/domain/7/device/vbd/51712/state"] = "4",
            ["/local/domain/8/data/os_uname"] = "another domain's",
        });
        var agent = XenGuestAgent.Read(tree, 7);
        Assert.That(agent, Is.Not.Null);
        Assert.That(agent!.Xenstore, Is.EquivalentTo(new Dictionary<string, string>
        {
            ["data/os_uname"] = "6.1.0-56-amd64",
            ["data/os_distro"] = "busybox",
            ["attr/vif/0/ipv4/0"] = "10.0.0.2",
            ["attr/PVAddons/MajorVersion"] = "9",
            ["control/feature-balloon"] = "1",
        }));
        Assert.That(agent.PvDriversDetected, Is.True);
    }

    [Test]
    public void Subtrees_are_read_only_to_xenopsds_depths_and_hotfix_lists_are_left_out()
    {
        var tree = new Tree(new()
        {
            ["/local/domain/3/data/volumes/0/name"] = "too deep under data",
            ["/local/domain/3/data/service/agent/state"] = "running",
            ["/local/domain/3/attr/os/hotfixes/0"] = "left out",
            ["/local/domain/3/attr/a/b/c/d"] = "depth 3",
            ["/local/domain/3/attr/a/b/c/d/e"] = "below depth 3",
            ["/local/domain/3/device/vif/0/state"] = "1",
        });
        var agent = XenGuestAgent.Read(tree, 3)!;
        Assert.That(agent.Xenstore.Keys, Is.EquivalentTo(new[] { "data/service/agent/state", "attr/a/b/c/d" }));
        Assert.That(agent.PvDriversDetected, Is.False, "a frontend that never connected is no evidence of PV drivers");
    }

    [Test]
    public void A_guest_that_published_nothing_and_connected_nothing_has_no_agent_data() =>
        Assert.That(XenGuestAgent.Read(new Tree(new() { ["/local/domain/5/name"] = "quiet" }), 5), Is.Null);
}
