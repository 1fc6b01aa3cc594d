using System.Globalization;

namespace Xapi.Server.Api;

/// <summary>
/// What a VBD's <c>device</c> or <c>userdevice</c> string names, as real hosts read it
/// (xenopsd's <c>Device_number</c>): a bus, a disk and a partition. A plain number means a
/// different device for an HVM guest (numbers 0–3 are IDE) than for a PV guest, so a string is
/// compared by every way it can be read: "0", "hda" and "xvda" all clash with each other.
/// </summary>
internal readonly record struct DeviceNumber(DeviceBus Bus, int Disk, int Partition)
{
    private static DeviceNumber? Make(DeviceBus bus, long disk, long partition)
    {
        var (diskMax, partitionMax) = bus switch
        {
            DeviceBus.Xen => ((1 << 20) - 1, 15),
            DeviceBus.Scsi => (15, 15),
            DeviceBus.Floppy => (2, 0),
            // The deprecated Linux IDE encodings, which real hosts still use for disks past 3.
            _ => (19, 63),
        };
        return disk >= 0 && disk <= diskMax && partition >= 0 && partition <= partitionMax
            ? new DeviceNumber(bus, (int)disk, (int)partition)
            : null;
    }

    /// <summary>Disk number <paramref name="n"/> of a guest: IDE for HVM's first four, else a Xen disk.</summary>
    public static DeviceNumber? OfDiskNumber(bool hvm, long n) => Make(hvm && n < 4 ? DeviceBus.Ide : DeviceBus.Xen, n, 0);

    public static DeviceNumber? Parse(string name, bool hvm) =>
        (OcamlInt.TryParse(name, out var n) ? OfDiskNumber(hvm, n) : null) ?? OfLinuxDevice(name);

    /// <summary>Every device the string can name (as an HVM and as a PV guest would read it).</summary>
    public static IEnumerable<DeviceNumber> Interpretations(string name)
    {
        if (Parse(name, hvm: true) is { } asHvm)
        {
            yield return asHvm;
        }
        if (Parse(name, hvm: false) is { } asPv)
        {
            yield return asPv;
        }
    }

    /// <summary>The Linux name (<c>xvda</c>, <c>fda</c>, …); floppies are named this way by autodetect.</summary>
    public string ToLinuxDevice()
    {
        var prefix = Bus switch
        {
            DeviceBus.Scsi => "sd",
            DeviceBus.Floppy => "fd",
            _ => "xvd",
        };
        return prefix + Base26(Disk) + (Partition == 0 ? "" : Partition.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>The name libxl's disk spec takes (<c>vdev</c>): an emulated IDE disk is <c>hdX</c> there, a PV disk <c>xvdX</c>.</summary>
    public string ToLibxlDevice() =>
        Bus == DeviceBus.Ide ? "hd" + Base26(Disk) + (Partition == 0 ? "" : Partition.ToString(CultureInfo.InvariantCulture)) : ToLinuxDevice();

    // 0 → a, 25 → z, 26 → aa.
    private static string Base26(int x)
    {
        var high = (x / 26) - 1;
        var low = (char)('a' + (x % 26));
        return (high == -1 ? "" : Base26(high)) + low;
    }

    private static DeviceNumber? OfLinuxDevice(string name)
    {
        if (name.StartsWith("xvd", StringComparison.Ordinal))
        {
            return Letters(name.AsSpan(3), DeviceBus.Xen);
        }
        if (name.StartsWith("sd", StringComparison.Ordinal))
        {
            return Letters(name.AsSpan(2), DeviceBus.Scsi);
        }
        if (name.StartsWith("fd", StringComparison.Ordinal))
        {
            return Letters(name.AsSpan(2), DeviceBus.Floppy);
        }
        if (name.StartsWith("hd", StringComparison.Ordinal))
        {
            return Letters(name.AsSpan(2), DeviceBus.Ide);
        }
        if (name.StartsWith('d'))
        {
            return NumberPNumber(name.AsSpan(1));
        }
        return null;
    }

    // "abc12": base-26 letters, then an optional partition number. Like the real parser, the
    // result is not range-checked here (an empty letter run reads as disk -1).
    private static DeviceNumber? Letters(ReadOnlySpan<char> rest, DeviceBus bus)
    {
        var letters = 0;
        while (letters < rest.Length && rest[letters] is >= 'a' and <= 'z')
        {
            letters++;
        }
        long disk = 0;
        foreach (var c in rest[..letters])
        {
            disk = unchecked((disk * 26) + (c - 'a' + 1));
        }
        disk--;
        var tail = rest[letters..];
        if (tail.IsEmpty)
        {
            return new DeviceNumber(bus, unchecked((int)disk), 0);
        }
        return Digits(tail, out var partition, out var after) && after.IsEmpty
            ? new DeviceNumber(bus, unchecked((int)disk), partition)
            : null;
    }

    // "12p3": disk 12, partition 3 (xenstore-style names).
    private static DeviceNumber? NumberPNumber(ReadOnlySpan<char> rest)
    {
        if (!Digits(rest, out var disk, out var after))
        {
            return null;
        }
        if (after.IsEmpty)
        {
            return new DeviceNumber(DeviceBus.Xen, disk, 0);
        }
        if (after[0] != 'p' || !Digits(after[1..], out var partition, out var end) || !end.IsEmpty)
        {
            return null;
        }
        return new DeviceNumber(DeviceBus.Xen, disk, partition);
    }

    private static bool Digits(ReadOnlySpan<char> text, out int value, out ReadOnlySpan<char> after)
    {
        var count = 0;
        while (count < text.Length && char.IsAsciiDigit(text[count]))
        {
            count++;
        }
        after = text[count..];
        return int.TryParse(text[..count], NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }
}

internal enum DeviceBus
{
    Xen,
    Scsi,
    Floppy,
    Ide,
}

/// <summary>
/// OCaml's <c>int_of_string</c>, which real hosts apply to device strings: an optional sign,
/// then decimal, or <c>0x</c>/<c>0o</c>/<c>0b</c>/<c>0u</c> prefixed digits; underscores may
/// follow the first digit.
/// </summary>
internal static class OcamlInt
{
    public static bool TryParse(string text, out long value)
    {
        value = 0;
        var span = text.AsSpan();
        var negative = false;
        if (span.Length > 0 && span[0] is '-' or '+')
        {
            negative = span[0] == '-';
            span = span[1..];
        }
        var radix = 10;
        if (span.Length > 2 && span[0] == '0' && char.ToLowerInvariant(span[1]) is 'x' or 'o' or 'b' or 'u')
        {
            radix = char.ToLowerInvariant(span[1]) switch { 'x' => 16, 'o' => 8, 'b' => 2, _ => 10 };
            span = span[2..];
        }
        if (span.IsEmpty || span[0] == '_')
        {
            return false;
        }
        Int128 result = 0;
        foreach (var c in span)
        {
            if (c == '_')
            {
                continue;
            }
            var digit = c switch
            {
                >= '0' and <= '9' => c - '0',
                >= 'a' and <= 'f' => c - 'a' + 10,
                >= 'A' and <= 'F' => c - 'A' + 10,
                _ => 99,
            };
            if (digit >= radix)
            {
                return false;
            }
            result = (result * radix) + digit;
            if (result > long.MaxValue)
            {
                return false;
            }
        }
        value = negative ? -(long)result : (long)result;
        return true;
    }

    /// <summary>An unsigned decimal as OCaml's <c>Scanf "%u"</c> reads it (digits, underscores after the first).</summary>
    public static bool TryParseUnsignedDecimal(string text, out long value)
    {
        value = 0;
        if (text.Length == 0 || !char.IsAsciiDigit(text[0]))
        {
            return false;
        }
        foreach (var c in text)
        {
            if (c == '_')
            {
                continue;
            }
            if (!char.IsAsciiDigit(c) || value > (long.MaxValue - 9) / 10)
            {
                return false;
            }
            value = (value * 10) + (c - '0');
        }
        return true;
    }
}
