using System.Globalization;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>
/// A running domain's device I/O as dom0's kernel counts it in sysfs: a VIF through its netback
/// interface <c>vif{domid}.{devid}</c> (what the backend receives, the guest sent), a disk served
/// by blkback through <c>vbd-{domid}-{devid}</c>'s sector counts. A disk served by qemu (qdisk)
/// has no kernel counters and reads as zero.
/// </summary>
public sealed class XenDeviceCounters(string sysfsRoot = "/sys")
{
    private const long SectorBytes = 512;

    public VifStats Vif(uint domid, int device)
    {
        var statistics = Path.Combine(sysfsRoot, "class", "net", $"vif{domid}.{device}", "statistics");
        // The guest receives what the backend transmits.
        return new VifStats(device, Counter(statistics, "tx_bytes"), Counter(statistics, "rx_bytes"));
    }

    /// <param name="guestDevice">The guest's name for the disk (<c>xvda</c>), whose device number names the backend.</param>
    public VbdStats Vbd(uint domid, string device, string guestDevice)
    {
        if (XenDeviceNumber.Of(guestDevice) is not { } devid)
        {
            return new VbdStats(device, 0, 0);
        }
        var statistics = Path.Combine(sysfsRoot, "bus", "xen-backend", "devices", $"vbd-{domid}-{devid}", "statistics");
        return new VbdStats(device, Counter(statistics, "rd_sect") * SectorBytes, Counter(statistics, "wr_sect") * SectorBytes);
    }

    private static long Counter(string directory, string name)
    {
        try
        {
            return long.TryParse(File.ReadAllText(Path.Combine(directory, name)).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The device is going away, or was never there.
            return 0;
        }
    }
}

/// <summary>Xen's virtual block device numbers (xen/include/public/io/blkif.h's encoding, what xenstore's device ids are).</summary>
public static class XenDeviceNumber
{
    private const int XenDiskMajor = 202;
    private const int ExtendedFlag = 1 << 28;

    /// <summary>The number of <c>xvdX</c> (or <c>xvdXN</c> with a partition); null for other names.</summary>
    public static int? Of(string name)
    {
        if (!name.StartsWith("xvd", StringComparison.Ordinal))
        {
            return null;
        }
        var letters = name[3..].TakeWhile(char.IsAsciiLetterLower).ToArray();
        var rest = name[(3 + letters.Length)..];
        if (letters.Length is 0 or > 3)
        {
            return null;
        }
        var disk = 0;
        foreach (var letter in letters)
        {
            disk = (disk * 26) + (letter - 'a' + 1);
        }
        disk--;
        var partition = 0;
        if (rest.Length > 0 && !int.TryParse(rest, NumberStyles.None, CultureInfo.InvariantCulture, out partition))
        {
            return null;
        }
        return disk < 16 && partition < 16
            ? (XenDiskMajor << 8) | (disk << 4) | partition
            : partition < 256 ? ExtendedFlag | (disk << 8) | partition : null;
    }
}
