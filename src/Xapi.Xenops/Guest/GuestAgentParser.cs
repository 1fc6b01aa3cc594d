using System.Globalization;
using Xapi.Model;

namespace Xapi.Xenops.Guest;

/// <summary>
/// Turns a guest agent's xenstore tree into the maps of VM_guest_metrics, as the real server's
/// xapi_guest_agent.ml reads them (vm-facts.md §8.2). Pure, and shared by every backend: the
/// simulator publishes the same tree a real guest agent writes.
/// </summary>
public static class GuestAgentParser
{
    // xenstore paths relative to the domain's path. These are the guest's protocol, not datamodel names.
    private static readonly (string Path, string Key)[] s_pvDriversVersion =
    [
        ("attr/PVAddons/MajorVersion", "major"),
        ("attr/PVAddons/MinorVersion", "minor"),
        ("attr/PVAddons/MicroVersion", "micro"),
        ("attr/PVAddons/BuildVersion", "build"),
        ("attr/PVAddons/Application", "application"),
    ];

    private static readonly (string Path, string Key)[] s_osVersion =
    [
        ("data/os_name", "name"),
        ("data/os_uname", "uname"),
        ("data/os_distro", "distro"),
        ("data/os_majorver", "major"),
        ("data/os_minorver", "minor"),
        ("attr/os/spmajor", "spmajor"),
        ("attr/os/spminor", "spminor"),
    ];

    private static readonly (string Path, string Key)[] s_memory =
    [
        ("data/meminfo_free", "free"),
        ("data/meminfo_total", "total"),
    ];

    public static GuestMetrics Parse(IReadOnlyDictionary<string, string> tree)
    {
        var pvDrivers = Pick(tree, s_pvDriversVersion);
        // A version without a micro number gets "-1" so clients comparing versions see one.
        if (pvDrivers.Count > 0 && !pvDrivers.ContainsKey("micro"))
        {
            pvDrivers["micro"] = "-1";
        }

        return new GuestMetrics(
            OsVersion: Pick(tree, s_osVersion),
            PvDriversVersion: pvDrivers,
            Networks: Networks(tree),
            Other: Other(tree),
            Memory: Pick(tree, s_memory),
            NetbiosName: NetbiosName(tree),
            CanUseHotplugVbd: Tristate(tree, "feature/hotplug/vbd"),
            CanUseHotplugVif: Tristate(tree, "feature/hotplug/vif"));
    }

    private static SortedDictionary<string, string> Pick(IReadOnlyDictionary<string, string> tree, (string Path, string Key)[] map)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (path, key) in map)
        {
            if (tree.TryGetValue(path, out var value))
            {
                result[key] = value;
            }
        }

        return result;
    }

    private static SortedDictionary<string, string> NetbiosName(IReadOnlyDictionary<string, string> tree)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (tree.TryGetValue("data/host_name_dns", out var name))
        {
            result["host_name"] = tree.TryGetValue("data/domain", out var domain) ? name + "." + domain : name;
        }

        return result;
    }

    private static SortedDictionary<string, string> Networks(IReadOnlyDictionary<string, string> tree)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var firstIpv4 = new SortedDictionary<int, (int Index, string Address)>();
        foreach (var (path, value) in tree)
        {
            var parts = path.Split('/');
            // New protocol: attr/vif/<n>/ipv4/<i> and attr/vif/<n>/ipv6/<i>.
            if (parts is ["attr", "vif", var vif, var family and ("ipv4" or "ipv6"), var index]
                && TryIndex(vif, out var n) && TryIndex(index, out var i))
            {
                result[$"{n}/{family}/{i}"] = value;
                if (family == "ipv4" && (!firstIpv4.TryGetValue(n, out var first) || i < first.Index))
                {
                    firstIpv4[n] = (i, value);
                }
            }
            // Old protocol: attr/eth<n>/ip and attr/eth<n>/ipv6/<i>/addr.
            else if (parts is ["attr", var eth, "ip"] && TryInterface(eth, out n))
            {
                result[$"{n}/ip"] = value;
                result[$"{n}/ipv4/0"] = value;
            }
            else if (parts is ["attr", var eth6, "ipv6", var index6, "addr"] && TryInterface(eth6, out n) && TryIndex(index6, out i))
            {
                result[$"{n}/ipv6/{i}"] = value;
            }
        }

        foreach (var (n, (_, address)) in firstIpv4)
        {
            result[$"{n}/ip"] = address;
        }

        return result;
    }

    private static SortedDictionary<string, string> Other(IReadOnlyDictionary<string, string> tree)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (path, value) in tree)
        {
            if (path.StartsWith("control/", StringComparison.Ordinal) && path.IndexOf('/', "control/".Length) < 0)
            {
                result[path["control/".Length..]] = value;
            }
        }

        if (tree.TryGetValue("data/cant_suspend_reason", out var reason))
        {
            result.Remove("feature-suspend");
            result["data-cant-suspend-reason"] = reason;
        }

        if (tree.TryGetValue("data/ts", out var ts))
        {
            result["data-ts"] = ts;
        }

        return result;
    }

    private static TristateType Tristate(IReadOnlyDictionary<string, string> tree, string path) =>
        tree.TryGetValue(path, out var value)
            ? value switch
            {
                "1" => TristateType.Yes,
                "0" => TristateType.No,
                _ => TristateType.Unspecified,
            }
            : TristateType.Unspecified;

    private static bool TryIndex(string text, out int value) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);

    // The old protocol names interfaces eth<n>; other prefixes the real server accepts
    // (xenbr, eno, ens, emp, enx) are not published by the simulator and not read here.
    private static bool TryInterface(string name, out int value)
    {
        value = 0;
        return name.StartsWith("eth", StringComparison.Ordinal) && TryIndex(name[3..], out value);
    }
}

/// <summary>The maps of a VM_guest_metrics row, keyed as the real server keys them.</summary>
public sealed record GuestMetrics(
    IReadOnlyDictionary<string, string> OsVersion,
    IReadOnlyDictionary<string, string> PvDriversVersion,
    IReadOnlyDictionary<string, string> Networks,
    IReadOnlyDictionary<string, string> Other,
    IReadOnlyDictionary<string, string> Memory,
    IReadOnlyDictionary<string, string> NetbiosName,
    TristateType CanUseHotplugVbd,
    TristateType CanUseHotplugVif);
