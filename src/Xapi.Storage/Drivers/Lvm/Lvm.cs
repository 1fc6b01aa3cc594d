using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Xapi.Storage.Drivers.Lvm;

/// <summary>What one run of an LVM command gave back.</summary>
public sealed record LvmResult(int ExitCode, string Output, string Error);

/// <summary>Runs LVM commands; the driver's tests replace it with canned answers.</summary>
public interface ILvmRunner
{
    /// <summary>Runs <c>lvm &lt;arguments&gt;</c> (arguments[0] is the command: lvcreate, vgs, …).</summary>
    Task<LvmResult> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken);
}

/// <summary>
/// Debian's <c>lvm</c> binary (lvm2), run with its arguments as a list (never through a shell)
/// and under <c>setpriv --pdeathsig KILL</c> so a killed daemon leaves no LVM command holding
/// the VG lock. LVM_SUPPRESS_FD_WARNINGS keeps the inherited-descriptor warnings out of stderr.
/// </summary>
public sealed class LvmProcessRunner(string lvmPath = "lvm") : ILvmRunner
{
    private static readonly Dictionary<string, string> Environment = new() { ["LVM_SUPPRESS_FD_WARNINGS"] = "1", ["LC_ALL"] = "C" };

    public async Task<LvmResult> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        // No prompt may ever wait for an answer: stdin is closed at once (LVM then answers "no").
        var (exitCode, output, error) = await ToolProcess.RunAsync(lvmPath, arguments, Environment, cancellationToken).ConfigureAwait(false);
        return new LvmResult(exitCode, output, error);
    }
}

/// <summary>The argument lists of every LVM command the driver runs, built in one place.</summary>
public static class LvmCommands
{
    public const string VgPrefix = "VG_XenStorage-";
    public const string LvPrefix = "LV-";

    /// <summary>SM's metadata area size for a new PV and VG.</summary>
    public const string MetadataSize = "10M";

    public static string VgName(string srUuid) => VgPrefix + CheckedUuid(srUuid, "SR");

    public static string LvName(string vdiUuid) => LvPrefix + CheckedUuid(vdiUuid, "VDI");

    /// <summary>The uuid inside an LV name, or null when the LV is not one of ours.</summary>
    public static string? VdiUuidOf(string lvName) =>
        lvName.StartsWith(LvPrefix, StringComparison.Ordinal) && SrDirectory.IsUuid(lvName[LvPrefix.Length..]) ? lvName[LvPrefix.Length..] : null;

    /// <summary>The device node of an active LV, as LVM makes it.</summary>
    public static string DevicePath(string srUuid, string vdiUuid) => $"/dev/{VgName(srUuid)}/{LvName(vdiUuid)}";

    public static string Bytes(long value) => value.ToString(CultureInfo.InvariantCulture) + "b";

    public static IReadOnlyList<string> PvCreate(string device) => ["pvcreate", "-ff", "-y", "--metadatasize", MetadataSize, device];

    public static IReadOnlyList<string> VgCreate(string vg, string device) => ["vgcreate", "--metadatasize", MetadataSize, vg, device];

    public static IReadOnlyList<string> VgRemove(string vg) => ["vgremove", "-f", vg];

    public static IReadOnlyList<string> PvRemove(string device) => ["pvremove", "-y", device];

    public static IReadOnlyList<string> VgChange(string vg, bool active) => ["vgchange", active ? "-ay" : "-an", vg];

    public static IReadOnlyList<string> LvChange(string vg, string lv, bool active) => ["lvchange", active ? "-ay" : "-an", $"{vg}/{lv}"];

    public static IReadOnlyList<string> Vgs(string vg) =>
        ["vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_name,vg_size,vg_free,vg_extent_size", vg];

    public static IReadOnlyList<string> Lvs(string vg) =>
        ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_attr,origin", vg];

    /// <summary>Every PV LVM sees on the device, with the VG it belongs to (empty when none).</summary>
    public static IReadOnlyList<string> Pvs(string device) =>
        ["pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "pv_name,vg_name,vg_size", device];

    /// <summary>
    /// A new plain LV. As SM's (<c>-W y --yes</c>): old signatures are wiped without a question,
    /// but the rest of the space is not zeroed, so a new VDI may show a deleted one's bytes.
    /// </summary>
    public static IReadOnlyList<string> LvCreate(string vg, string lv, long size) =>
        ["lvcreate", "-W", "y", "--yes", "-L", Bytes(size), "-n", lv, vg];

    /// <summary>A thick copy-on-write snapshot of <paramref name="origin"/>; read-only unless asked.</summary>
    public static IReadOnlyList<string> LvSnapshot(string vg, string origin, string lv, long cowSize, bool writable) =>
        ["lvcreate", "-y", "-s", "-p", writable ? "rw" : "r", "-L", Bytes(cowSize), "-n", lv, $"{vg}/{origin}"];

    public static IReadOnlyList<string> LvRemove(string vg, string lv) => ["lvremove", "-f", $"{vg}/{lv}"];

    public static IReadOnlyList<string> LvExtend(string vg, string lv, long size) => ["lvextend", "-L", Bytes(size), $"{vg}/{lv}"];

    private static string CheckedUuid(string uuid, string what) =>
        SrDirectory.IsUuid(uuid) ? uuid : throw SmException.InvalidArgument($"not a {what} uuid: {uuid}");
}

/// <summary>One LV as <c>lvs</c> reports it.</summary>
public sealed record LvReport(string Name, long Size, string Attributes, string Origin)
{
    /// <summary>A copy-on-write snapshot (lv_attr 's', or 'S' when it overflowed and is invalid).</summary>
    public bool IsSnapshot => Attributes.Length > 0 && Attributes[0] is 's' or 'S';

    public bool IsInvalidSnapshot => Attributes.Length > 0 && Attributes[0] == 'S';

    public bool IsReadOnly => Attributes.Length > 1 && Attributes[1] == 'r';

    public bool IsActive => Attributes.Length > 4 && Attributes[4] == 'a';

    public bool IsOpen => Attributes.Length > 5 && Attributes[5] == 'o';
}

/// <summary>One VG as <c>vgs</c> reports it.</summary>
public sealed record VgReport(string Name, long Size, long Free, long ExtentSize);

/// <summary>One PV as <c>pvs</c> reports it.</summary>
public sealed record PvReport(string Name, string VgName, long VgSize);

/// <summary>Reads LVM's JSON reports (<c>--reportformat json</c>): {"report":[{"lv":[{…}]}]}.</summary>
public static class LvmReportParser
{
    public static IReadOnlyList<LvReport> Lvs(string json) =>
        Rows(json, "lv").Select(r => new LvReport(Text(r, "lv_name"), Number(r, "lv_size"), Text(r, "lv_attr"), Text(r, "origin"))).ToList();

    public static IReadOnlyList<VgReport> Vgs(string json) =>
        Rows(json, "vg").Select(r => new VgReport(Text(r, "vg_name"), Number(r, "vg_size"), Number(r, "vg_free"), Number(r, "vg_extent_size"))).ToList();

    public static IReadOnlyList<PvReport> Pvs(string json) =>
        Rows(json, "pv").Select(r => new PvReport(Text(r, "pv_name"), Text(r, "vg_name"), r.ContainsKey("vg_size") && r["vg_size"] != "" ? Number(r, "vg_size") : 0)).ToList();

    private static List<Dictionary<string, string>> Rows(string json, string kind)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var rows = new List<Dictionary<string, string>>();
            foreach (var report in document.RootElement.GetProperty("report").EnumerateArray())
            {
                if (!report.TryGetProperty(kind, out var list))
                {
                    continue;
                }
                foreach (var row in list.EnumerateArray())
                {
                    rows.Add(row.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() ?? "" : p.Value.GetRawText()));
                }
            }
            return rows;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new SmException(SmErrors.SrScan, "The SR scan failed", $"unreadable LVM {kind} report: {e.Message}");
        }
    }

    private static string Text(Dictionary<string, string> row, string key) =>
        row.TryGetValue(key, out var value) ? value : throw new SmException(SmErrors.SrScan, "The SR scan failed", $"LVM report has no {key}");

    /// <summary>A size in bytes; a trailing unit letter (LVM prints "B" without --nosuffix) is allowed.</summary>
    internal static long Number(Dictionary<string, string> row, string key)
    {
        var text = Text(row, key).Trim().TrimEnd('B', 'b');
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new SmException(SmErrors.SrScan, "The SR scan failed", $"LVM report has {key}={Text(row, key)}, not a byte count");
    }
}
