using System.Runtime.InteropServices;

namespace Xapi.Storage;

/// <summary>
/// The directory an SR keeps its images in, and the only way drivers turn names into paths:
/// every name must be a uuid with a known extension, the directory and the files in it must
/// not be symbolic links, and nothing outside it is ever opened, created or removed.
/// </summary>
public sealed partial class SrDirectory
{
    public SrDirectory(string root)
    {
        Root = root;
    }

    public string Root { get; }

    /// <summary>Where interrupted multi-step operations leave their journals.</summary>
    public string JournalDirectory => System.IO.Path.Combine(Root, ".journal");

    /// <summary>Whether <paramref name="value"/> is a uuid in its canonical lower-case form.</summary>
    public static bool IsUuid(string? value) =>
        value is { Length: 36 } && Guid.TryParseExact(value, "D", out var parsed) && parsed.ToString("D") == value;

    /// <summary>
    /// Checks a directory named by a client (device_config <c>location</c>): absolute, already
    /// normal (no <c>.</c> or <c>..</c> segments, no doubled or trailing separators), printable.
    /// </summary>
    public static string CheckClientDirectory(string? value, string key)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw new SmException(SmErrors.ConfigLocationMissing, $"The request is missing the {key} parameter");
        }
        if (!value.StartsWith('/') || value.Any(char.IsControl) || value.Split('/').Skip(1).Any(s => s is "" or "." or "..") && value != "/"
            || System.IO.Path.GetFullPath(value) != value)
        {
            throw SmException.InvalidArgument($"{key} must be an absolute path without '.' or '..' segments: {value}");
        }
        return value;
    }

    /// <summary>The path of the file <c>&lt;uuid&gt;&lt;extension&gt;</c>; refuses any other name.</summary>
    public string PathOf(string uuid, string extension)
    {
        if (!IsUuid(uuid))
        {
            throw SmException.InvalidArgument($"not a VDI uuid: {uuid}");
        }
        return System.IO.Path.Combine(Root, uuid + extension);
    }

    /// <summary>Refuses a root that is missing or a symbolic link.</summary>
    public void CheckRoot()
    {
        var info = new DirectoryInfo(Root);
        if (!info.Exists)
        {
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"{Root} does not exist");
        }
        if (info.LinkTarget is not null)
        {
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"{Root} is a symbolic link");
        }
    }

    /// <summary>Whether the path is a regular file (not a symbolic link, device or directory).</summary>
    public static bool IsRegularFile(string path)
    {
        var info = new FileInfo(path);
        return info.Exists && info.LinkTarget is null && (info.Attributes & (FileAttributes.Directory | FileAttributes.Device | FileAttributes.ReparsePoint)) == 0;
    }

    /// <summary>
    /// The uuids of the regular files named <c>&lt;uuid&gt;&lt;extension&gt;</c>, with the names
    /// skipped because they are something else (links, directories, other names).
    /// </summary>
    public (IReadOnlyList<string> Uuids, IReadOnlyList<string> Skipped) List(string extension)
    {
        var uuids = new List<string>();
        var skipped = new List<string>();
        foreach (var entry in new DirectoryInfo(Root).EnumerateFileSystemInfos())
        {
            if (!entry.Name.EndsWith(extension, StringComparison.Ordinal))
            {
                continue;
            }
            var stem = entry.Name[..^extension.Length];
            if (IsUuid(stem) && entry is FileInfo && entry.LinkTarget is null && (entry.Attributes & FileAttributes.ReparsePoint) == 0)
            {
                uuids.Add(stem);
            }
            else
            {
                skipped.Add(entry.Name);
            }
        }
        uuids.Sort(StringComparer.Ordinal);
        return (uuids, skipped);
    }

    /// <summary>Makes a rename or unlink in the directory durable.</summary>
    public void SyncDirectory() => SyncDirectory(Root);

    public static void SyncDirectory(string directory)
    {
        var fd = Native.Open(directory, Native.ORdOnly | Native.ODirectory);
        if (fd < 0)
        {
            return;
        }
        try
        {
            Native.FSync(fd);
        }
        finally
        {
            Native.Close(fd);
        }
    }

    /// <summary>Writes a small file durably: a temporary name, fsync, rename, directory fsync.</summary>
    public static void WriteDurably(string path, string content)
    {
        var temporary = path + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            stream.Write(System.Text.Encoding.UTF8.GetBytes(content));
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        SyncDirectory(System.IO.Path.GetDirectoryName(path)!);
    }

    /// <summary>The filesystem's size and free space under <paramref name="path"/>.</summary>
    public static (long Size, long Available) FileSystemSpace(string path)
    {
        var drive = new DriveInfo(path);
        return (drive.TotalSize, drive.AvailableFreeSpace);
    }

    /// <summary>Bytes a file occupies on disk (its allocated blocks, not its length).</summary>
    public static long AllocatedBytes(string path) => Native.AllocatedBytes(path);

    private static partial class Native
    {
        public const int ORdOnly = 0;
        public const int ODirectory = 0x10000;

        [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        public static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static partial int FSync(int fd);

        [LibraryImport("libc", EntryPoint = "close")]
        public static partial int Close(int fd);

        public static long AllocatedBytes(string path)
        {
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                return 0;
            }
            return Stat(path, out var blocks) == 0 ? blocks * 512 : info.Length;
        }

        private static int Stat(string path, out long blocks)
        {
            blocks = 0;
            var buffer = new byte[256];
            var result = StatX(-100, path, 0x100 /* AT_SYMLINK_NOFOLLOW */, 0x400 /* STATX_BLOCKS */, buffer);
            if (result != 0)
            {
                return result;
            }
            // struct statx: stx_blocks is the u64 at offset 48.
            blocks = BitConverter.ToInt64(buffer, 48);
            return 0;
        }

        [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int StatX(int dirfd, string path, int flags, uint mask, byte[] buffer);
    }
}
