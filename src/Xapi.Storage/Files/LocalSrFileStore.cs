using System.Runtime.InteropServices;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Files;

/// <summary>An SR directory on a local filesystem: <c>&lt;location&gt;/&lt;sr-uuid&gt;</c>, through System.IO and <see cref="SrDirectory"/>.</summary>
public sealed partial class LocalSrFileStore(string location, SrDirectory directory) : ISrFileStore
{
    public string Root => directory.Root;

    public string JournalDirectory => directory.JournalDirectory;

    public bool CanCommitIntoBacking => true;

    public string PathOf(string uuid, string extension) => directory.PathOf(uuid, extension);

    public string PathIn(string directoryPath, string name) => Path.Combine(directoryPath, CheckName(name));

    public void CheckRoot() => directory.CheckRoot();

    public void CreateRoot()
    {
        Directory.CreateDirectory(location);
        if (new DirectoryInfo(location).LinkTarget is not null)
        {
            throw new SmException(SmErrors.FileSrCreate, "Failed to create the SR directory", $"{location} is a symbolic link");
        }
        if (Directory.Exists(Root) && Directory.EnumerateFileSystemEntries(Root).Any())
        {
            throw new SmException(SmErrors.SrExists, "The SR already exists", Root);
        }
        Directory.CreateDirectory(Root);
        SrDirectory.SyncDirectory(location);
    }

    public void DeleteRoot()
    {
        Directory.Delete(Root, recursive: true);
        SrDirectory.SyncDirectory(Path.GetDirectoryName(Root)!);
    }

    public (IReadOnlyList<string> Uuids, IReadOnlyList<string> Skipped) List(string extension) => directory.List(extension);

    public IReadOnlyList<string> Files(string directoryPath, string suffix) =>
        Directory.Exists(directoryPath)
            ? Directory.EnumerateFiles(directoryPath, "*" + suffix).Where(SrDirectory.IsRegularFile).Order(StringComparer.Ordinal).ToList()
            : [];

    public bool Exists(string path) => File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget is not null;

    public bool IsRegularFile(string path) => SrDirectory.IsRegularFile(path);

    public string ReadText(string path) => File.ReadAllText(path);

    public void WriteDurably(string path, string content) => SrDirectory.WriteDurably(path, content);

    public void Move(string from, string to) => File.Move(from, to, overwrite: true);

    public void Delete(string path) => File.Delete(path);

    public void CreateDirectory(string path) => Directory.CreateDirectory(path);

    public void SyncDirectory() => directory.SyncDirectory();

    public void SyncDirectory(string directoryPath) => SrDirectory.SyncDirectory(directoryPath);

    public bool TryLink(string existing, string newName)
    {
        if (LinkNative(existing, newName) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new SmException(SmErrors.VdiSnapshot, "Failed to snapshot VDI", $"link {existing} {newName}: errno {errno}");
        }
        return true;
    }

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int LinkNative(string existing, string newName);

    public (long Size, long Available) Space() => SrDirectory.FileSystemSpace(Root);

    public long UsedBytes() => Directory.EnumerateFiles(Root, "*", SearchOption.AllDirectories).Sum(SrDirectory.AllocatedBytes);

    public long AllocatedBytes(string path) => SrDirectory.AllocatedBytes(path);

    public bool TryReadHeader(string path, out Qcow2Header header) => Qcow2Header.TryRead(path, out header);

    public string ImageOf(string path) => path;

    public Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForReading(string path) =>
        IsRegularFile(path)
            ? File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete)
            : throw new SmException(SmErrors.VdiMissing, "The VDI is not available", path);

    // Relative to the image's directory, so the SR's directory can move (a new mount point) without breaking chains.
    public string BackingNameOf(string uuid, string extension) => Path.GetFileName(PathOf(uuid, extension));

    public string? UuidOfBacking(string backingName, string extension)
    {
        var stem = backingName.EndsWith(extension, StringComparison.Ordinal) ? backingName[..^extension.Length] : "";
        return SrDirectory.IsUuid(stem) ? stem : null;
    }

    public void Dispose()
    {
    }

    internal static string CheckName(string name) =>
        name.Length is > 0 and <= 255 && name is not "." and not ".." && !name.Contains('/') && !name.Any(char.IsControl)
            ? name
            : throw SmException.InvalidArgument($"not a file name of an SR: {name}");
}
