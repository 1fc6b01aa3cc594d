using System.Text;
using Xapi.Storage.Drivers.Nfs;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Files;

/// <summary>
/// An SR directory <c>&lt;serverpath&gt;/&lt;sr-uuid&gt;</c> on an NFS export, reached without a kernel
/// mount: file operations through libnfs (NFSv3), images through qemu's <c>nfs://</c> driver. Paths
/// are inside the mounted export (<c>/&lt;sr-uuid&gt;/&lt;name&gt;</c>). Backing files are recorded as
/// absolute <c>nfs://</c> URLs because qemu resolves a relative name on <c>nfs://</c> as a path
/// below the image itself; an image whose backing URL is not exactly this SR's is not part of it.
/// </summary>
public sealed class NfsSrFileStore : ISrFileStore
{
    // Errnos that mean "this filesystem does not do hard links", as opposed to a failure.
    private static readonly int[] NoLinks = [-1 /* EPERM */, -18 /* EXDEV */, -31 /* EMLINK */, -38 /* ENOSYS */, -95 /* EOPNOTSUPP */];

    private const int MaxSmallFile = 1 << 20;
    private const int MaxDepth = 8;

    private readonly LibNfs _nfs;
    private readonly NfsLocation _location;

    private NfsSrFileStore(LibNfs nfs, NfsLocation location, string srUuid)
    {
        _nfs = nfs;
        _location = location;
        Root = "/" + srUuid;
    }

    /// <summary>Mounts the location's serverpath for the SR <paramref name="srUuid"/>.</summary>
    public static NfsSrFileStore Open(NfsLocation location, string srUuid)
    {
        if (!SrDirectory.IsUuid(srUuid))
        {
            throw SmException.InvalidArgument($"not an SR uuid: {srUuid}");
        }
        return new NfsSrFileStore(MountOf(location), location, srUuid);
    }

    internal static LibNfs MountOf(NfsLocation location)
    {
        try
        {
            return LibNfs.Mount(location.Server, location.ServerPath);
        }
        catch (SmException e)
        {
            throw new SmException(NfsErrors.NfsMount, "NFS mount error", e.Detail);
        }
    }

    public string Root { get; }

    public string JournalDirectory => Root + "/.journal";

    public bool CanCommitIntoBacking => false;

    public string PathOf(string uuid, string extension)
    {
        if (!SrDirectory.IsUuid(uuid) || extension.Contains('/'))
        {
            throw SmException.InvalidArgument($"not a VDI file name: {uuid}{extension}");
        }
        return $"{Root}/{uuid}{extension}";
    }

    public string PathIn(string directory, string name)
    {
        if (directory != Root && directory != JournalDirectory)
        {
            throw SmException.InvalidArgument($"not a directory of the SR: {directory}");
        }
        return $"{directory}/{LocalSrFileStore.CheckName(name)}";
    }

    public void CheckRoot()
    {
        var stat = _nfs.LStat(Root);
        if (stat is null)
        {
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"{Describe(Root)} does not exist");
        }
        if (!stat.Value.IsDirectory)
        {
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"{Describe(Root)} is not a directory");
        }
    }

    public void CreateRoot()
    {
        var stat = _nfs.LStat(Root);
        if (stat is { IsDirectory: false } || stat is not null && _nfs.ReadDirectory(Root).Count > 0)
        {
            throw new SmException(SmErrors.SrExists, "The SR already exists", Describe(Root));
        }
        _nfs.MakeDirectory(Root);
    }

    public void DeleteRoot() => RemoveTree(Root, 0);

    private void RemoveTree(string directory, int depth)
    {
        foreach (var entry in _nfs.ReadDirectory(directory))
        {
            var path = $"{directory}/{entry.Name}";
            if (entry.IsDirectory && depth < MaxDepth)
            {
                RemoveTree(path, depth + 1);
            }
            else
            {
                _nfs.Unlink(path);
            }
        }
        _nfs.RemoveDirectory(directory);
    }

    public (IReadOnlyList<string> Uuids, IReadOnlyList<string> Skipped) List(string extension)
    {
        var uuids = new List<string>();
        var skipped = new List<string>();
        foreach (var entry in _nfs.ReadDirectory(Root))
        {
            if (!entry.Name.EndsWith(extension, StringComparison.Ordinal))
            {
                continue;
            }
            var stem = entry.Name[..^extension.Length];
            if (SrDirectory.IsUuid(stem) && entry.IsRegularFile)
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

    public IReadOnlyList<string> Files(string directory, string suffix)
    {
        if (directory != Root && directory != JournalDirectory || _nfs.LStat(directory) is not { IsDirectory: true })
        {
            return [];
        }
        return _nfs.ReadDirectory(directory)
            .Where(e => e.IsRegularFile && e.Name.EndsWith(suffix, StringComparison.Ordinal))
            .Select(e => $"{directory}/{e.Name}")
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    public bool Exists(string path) => _nfs.LStat(path) is not null;

    public bool IsRegularFile(string path) => _nfs.LStat(path) is { IsRegularFile: true };

    public string ReadText(string path) =>
        IsRegularFile(path)
            ? Encoding.UTF8.GetString(_nfs.ReadAll(path, MaxSmallFile))
            : throw new SmException(SmErrors.Eio, "NFS I/O error", $"{Describe(path)} is not a regular file");

    public void WriteDurably(string path, string content)
    {
        var temporary = path + ".tmp";
        // A name planted there (a symbolic link) goes first, so the write cannot follow it.
        _nfs.Unlink(temporary);
        _nfs.WriteFile(temporary, Encoding.UTF8.GetBytes(content));
        _nfs.Rename(temporary, path);
    }

    public void Move(string from, string to) => _nfs.Rename(from, to);

    public void Delete(string path) => _nfs.Unlink(path);

    public void CreateDirectory(string path)
    {
        if (!_nfs.MakeDirectory(path) && _nfs.LStat(path) is not { IsDirectory: true })
        {
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"{Describe(path)} is not a directory");
        }
    }

    // NFSv3 servers commit directory changes (create, rename, remove) before they reply (RFC 1813).
    public void SyncDirectory()
    {
    }

    public void SyncDirectory(string directory)
    {
    }

    public bool TryLink(string existing, string newName)
    {
        var result = _nfs.Link(existing, newName);
        if (result == 0)
        {
            return true;
        }
        if (NoLinks.Contains(result))
        {
            return false;
        }
        throw new SmException(SmErrors.VdiSnapshot, "Failed to snapshot VDI", $"link {Describe(existing)} {Describe(newName)}: {_nfs.ErrorText(result)}");
    }

    public (long Size, long Available) Space() => _nfs.StatVfs(Root);

    public long UsedBytes() => Used(Root, 0);

    private long Used(string directory, int depth) =>
        _nfs.ReadDirectory(directory).Sum(e => e.IsDirectory && depth < MaxDepth ? Used($"{directory}/{e.Name}", depth + 1) : e.Used);

    public long AllocatedBytes(string path) => _nfs.LStat(path)?.Used ?? 0;

    public bool TryReadHeader(string path, out Qcow2Header header)
    {
        header = default;
        if (_nfs.LStat(path) is not { IsRegularFile: true } stat)
        {
            return false;
        }
        try
        {
            return Qcow2Header.TryRead((offset, buffer) => _nfs.ReadAt(path, offset, buffer), stat.Size, out header);
        }
        catch (SmException)
        {
            // Removed or replaced between the stat and the read: not an image of the SR now.
            return false;
        }
    }

    public Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForReading(string path) => null;

    public string ImageOf(string path) => _location.UrlOf(path);

    public string BackingNameOf(string uuid, string extension) => ImageOf(PathOf(uuid, extension));

    public string? UuidOfBacking(string backingName, string extension)
    {
        var prefix = ImageOf(Root) + "/";
        if (!backingName.StartsWith(prefix, StringComparison.Ordinal) || !backingName.EndsWith(extension, StringComparison.Ordinal))
        {
            return null;
        }
        var stem = backingName[prefix.Length..^extension.Length];
        return SrDirectory.IsUuid(stem) ? stem : null;
    }

    public void Dispose() => _nfs.Dispose();

    private string Describe(string path) => ImageOf(path);
}
