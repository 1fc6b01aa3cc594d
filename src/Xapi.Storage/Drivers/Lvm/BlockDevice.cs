using System.Runtime.InteropServices;

namespace Xapi.Storage.Drivers.Lvm;

/// <summary>Checks on the block device a client names in device_config <c>device</c>.</summary>
public static partial class BlockDevice
{
    /// <summary>
    /// Checks a device named by a client: absolute, normal (no <c>.</c>/<c>..</c> segments, no
    /// doubled separators, nothing unprintable), under <c>/dev/</c>, and a block device both as
    /// named and once symbolic links (<c>/dev/disk/by-id/…</c>) are followed, which must stay
    /// under <c>/dev/</c> too. A list of devices (SM's comma form) is refused: one PV per SR.
    /// </summary>
    public static string CheckClientDevice(string? value, string key)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw new SmException(SmErrors.ConfigDeviceMissing, $"The request is missing the {key} parameter");
        }
        if (value.Contains(','))
        {
            throw SmException.InvalidArgument($"{key} must name one block device, not a list: {value}");
        }
        SrDirectory.CheckClientDirectory(value, key);
        if (!value.StartsWith("/dev/", StringComparison.Ordinal) || value.Length <= "/dev/".Length)
        {
            throw SmException.InvalidArgument($"{key} must be a block device under /dev/: {value}");
        }
        var resolved = Resolve(value);
        if (resolved is null)
        {
            throw new SmException(SmErrors.ConfigDeviceMissing, "The device does not exist", $"{key} {value} does not exist");
        }
        if (!resolved.StartsWith("/dev/", StringComparison.Ordinal))
        {
            throw SmException.InvalidArgument($"{key} {value} leads outside /dev/ ({resolved})");
        }
        if (!IsBlockDevice(resolved))
        {
            throw SmException.InvalidArgument($"{key} {value} is not a block device");
        }
        return value;
    }

    /// <summary>The path with every symbolic link followed, or null when it does not exist.</summary>
    public static string? Resolve(string path)
    {
        var pointer = RealPath(path, IntPtr.Zero);
        if (pointer == IntPtr.Zero)
        {
            return null;
        }
        try
        {
            return Marshal.PtrToStringUTF8(pointer);
        }
        finally
        {
            Free(pointer);
        }
    }

    /// <summary>Whether the path (links followed) is a block device node.</summary>
    public static bool IsBlockDevice(string path)
    {
        var buffer = new byte[256];
        // statx, links followed, STATX_TYPE; stx_mode is the u16 at offset 28.
        if (StatX(-100, path, 0, 0x1, buffer) != 0)
        {
            return false;
        }
        var mode = BitConverter.ToUInt16(buffer, 28);
        return (mode & 0xF000) == 0x6000;
    }

    /// <summary>
    /// Whether something holds the device open exclusively (a mounted filesystem, an active
    /// device-mapper volume, another SR): the kernel refuses O_EXCL on a block device then.
    /// </summary>
    public static bool IsBusy(string path)
    {
        var fd = Open(path, 0x80 /* O_EXCL */ | 0x80000 /* O_CLOEXEC */);
        if (fd < 0)
        {
            return Marshal.GetLastPInvokeError() == 16; // EBUSY
        }
        Close(fd);
        return false;
    }

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial IntPtr RealPath(string path, IntPtr resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(IntPtr pointer);

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int StatX(int dirfd, string path, int flags, uint mask, byte[] buffer);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
