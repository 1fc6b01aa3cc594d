using System.Runtime.InteropServices;

namespace Xapi.Storage.Files;

/// <summary>
/// One NFSv3 client context of Debian's libnfs (<c>libnfs.so.13</c>, libnfs 4.0; later majors
/// changed the soname and some signatures, so re-read <c>&lt;nfsc/libnfs.h&gt;</c> on any upgrade).
/// Its synchronous calls block and a context is not thread-safe, so every call takes the lock.
/// Failures raise an <see cref="SmException"/> (no space → SR no space, else EIO) with libnfs's
/// message and the errno.
/// </summary>
internal sealed unsafe partial class LibNfs : IDisposable
{
    private const string Library = "libnfs.so.13";

    // Bounds every RPC, so a dead server fails the operation instead of hanging it.
    private const int TimeoutMilliseconds = 30_000;

    private readonly Lock _lock = new();
    private nint _context;

    private LibNfs(nint context)
    {
        _context = context;
    }

    /// <summary>Mounts <paramref name="export"/> of <paramref name="server"/> over NFSv3.</summary>
    public static LibNfs Mount(string server, string export)
    {
        var context = nfs_init_context();
        if (context == 0)
        {
            throw new SmException(SmErrors.Eio, "NFS I/O error", "nfs_init_context failed");
        }
        var client = new LibNfs(context);
        try
        {
            nfs_set_timeout(context, TimeoutMilliseconds);
            client.Check(nfs_set_version(context, 3), "set version 3");
            client.Check(nfs_mount(context, server, export), $"mount {server}:{export}");
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>The exports a server lists (the MOUNT protocol's EXPORT call): path and the groups allowed, empty for everyone.</summary>
    public static IReadOnlyList<(string Path, IReadOnlyList<string> Groups)>? Exports(string server)
    {
        var list = mount_getexports(server);
        if (list == 0)
        {
            return null;
        }
        try
        {
            var result = new List<(string, IReadOnlyList<string>)>();
            // struct exportnode { char *ex_dir; struct groupnode *ex_groups; struct exportnode *ex_next; }
            for (var node = list; node != 0 && result.Count < 4096; node = Marshal.ReadIntPtr(node, 16))
            {
                var groups = new List<string>();
                // struct groupnode { char *gr_name; struct groupnode *gr_next; }
                for (var group = Marshal.ReadIntPtr(node, 8); group != 0 && groups.Count < 4096; group = Marshal.ReadIntPtr(group, 8))
                {
                    groups.Add(Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(group)) ?? "");
                }
                result.Add((Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(node)) ?? "", groups));
            }
            return result;
        }
        finally
        {
            mount_free_export_list(list);
        }
    }

    /// <summary>What lstat says of a path, or null when nothing has that name.</summary>
    public NfsStat? LStat(string path)
    {
        var buffer = stackalloc ulong[17];
        lock (_lock)
        {
            var result = nfs_lstat64(Context, path, buffer);
            if (result == -2 /* ENOENT */)
            {
                return null;
            }
            Check(result, $"lstat {path}");
        }
        // struct nfs_stat_64: dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks, atime, mtime, ctime, *_nsec, used
        return new NfsStat((uint)buffer[2], (long)buffer[7], (long)buffer[16]);
    }

    /// <summary>The entries of a directory (without <c>.</c> and <c>..</c>): name, type (NF3REG = 1, NF3DIR = 2, …), bytes used.</summary>
    public IReadOnlyList<NfsEntry> ReadDirectory(string path)
    {
        var entries = new List<NfsEntry>();
        lock (_lock)
        {
            nint directory;
            Check(nfs_opendir(Context, path, &directory), $"opendir {path}");
            try
            {
                for (var entry = nfs_readdir(Context, directory); entry != 0; entry = nfs_readdir(Context, directory))
                {
                    // struct nfsdirent (x86-64): name @8, type @24, mode @28, size @32, used @136
                    var name = Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(entry, 8)) ?? "";
                    if (name is "." or "..")
                    {
                        continue;
                    }
                    entries.Add(new NfsEntry(name, (uint)Marshal.ReadInt32(entry, 24), Marshal.ReadInt64(entry, 136)));
                }
            }
            finally
            {
                nfs_closedir(Context, directory);
            }
        }
        return entries;
    }

    public byte[] ReadAll(string path, int limit)
    {
        lock (_lock)
        {
            var handle = Open(path, 0 /* O_RDONLY */);
            try
            {
                var result = new MemoryStream();
                var buffer = new byte[64 * 1024];
                while (true)
                {
                    var read = PRead(handle, result.Length, buffer);
                    if (read == 0)
                    {
                        return result.ToArray();
                    }
                    if (result.Length + read > limit)
                    {
                        throw new SmException(SmErrors.Eio, "NFS I/O error", $"{path} is larger than {limit} bytes");
                    }
                    result.Write(buffer, 0, read);
                }
            }
            finally
            {
                nfs_close(Context, handle);
            }
        }
    }

    /// <summary>Reads up to buffer.Length bytes at an offset; fewer only at the end of the file.</summary>
    public int ReadAt(string path, long offset, byte[] buffer)
    {
        lock (_lock)
        {
            var handle = Open(path, 0 /* O_RDONLY */);
            try
            {
                var total = 0;
                while (total < buffer.Length)
                {
                    var read = PRead(handle, offset + total, buffer.AsSpan(total));
                    if (read == 0)
                    {
                        break;
                    }
                    total += read;
                }
                return total;
            }
            finally
            {
                nfs_close(Context, handle);
            }
        }
    }

    /// <summary>Creates or truncates a file, writes it, and has the server commit it to stable storage.</summary>
    public void WriteFile(string path, ReadOnlySpan<byte> content)
    {
        lock (_lock)
        {
            nint handle;
            Check(nfs_create(Context, path, 0x1 | 0x40 | 0x200 /* O_WRONLY | O_CREAT | O_TRUNC */, 0x180 /* 0600 */, &handle), $"create {path}");
            try
            {
                var written = 0;
                while (written < content.Length)
                {
                    fixed (byte* data = content[written..])
                    {
                        var result = nfs_pwrite(Context, handle, (ulong)written, (ulong)(content.Length - written), data);
                        Check(result, $"write {path}");
                        written += result;
                    }
                }
                Check(nfs_fsync(Context, handle), $"fsync {path}");
            }
            finally
            {
                nfs_close(Context, handle);
            }
        }
    }

    public void Rename(string from, string to)
    {
        lock (_lock)
        {
            Check(nfs_rename(Context, from, to), $"rename {from} {to}");
        }
    }

    /// <summary>Removes a file; false when it did not exist.</summary>
    public bool Unlink(string path)
    {
        lock (_lock)
        {
            var result = nfs_unlink(Context, path);
            if (result == -2 /* ENOENT */)
            {
                return false;
            }
            Check(result, $"unlink {path}");
            return true;
        }
    }

    /// <summary>Makes a directory; false when the name already exists.</summary>
    public bool MakeDirectory(string path)
    {
        lock (_lock)
        {
            var result = nfs_mkdir(Context, path);
            if (result == -17 /* EEXIST */)
            {
                return false;
            }
            Check(result, $"mkdir {path}");
            return true;
        }
    }

    public void RemoveDirectory(string path)
    {
        lock (_lock)
        {
            var result = nfs_rmdir(Context, path);
            if (result != -2 /* ENOENT */)
            {
                Check(result, $"rmdir {path}");
            }
        }
    }

    /// <summary>NFSv3 LINK; the negative errno when the server refuses.</summary>
    public int Link(string existing, string newName)
    {
        lock (_lock)
        {
            return nfs_link(Context, existing, newName);
        }
    }

    /// <summary>The filesystem's size and the bytes available to this client.</summary>
    public (long Size, long Available) StatVfs(string path)
    {
        var buffer = stackalloc ulong[11];
        lock (_lock)
        {
            Check(nfs_statvfs64(Context, path, buffer), $"statvfs {path}");
        }
        // struct nfs_statvfs_64: bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax
        var fragment = buffer[1] == 0 ? buffer[0] : buffer[1];
        return ((long)(buffer[2] * fragment), (long)(buffer[4] * fragment));
    }

    public string ErrorText(int result) => $"{Marshal.PtrToStringUTF8(nfs_get_error(Context)) ?? ""} (errno {-result})";

    public void Dispose()
    {
        lock (_lock)
        {
            if (_context != 0)
            {
                // nfs_destroy_context closes the connection; NFSv3 needs no unmount call for the server to forget us.
                nfs_destroy_context(_context);
                _context = 0;
            }
        }
    }

    private nint Context => _context != 0 ? _context : throw new ObjectDisposedException(nameof(LibNfs));

    private nint Open(string path, int flags)
    {
        nint handle;
        Check(nfs_open(Context, path, flags, &handle), $"open {path}");
        return handle;
    }

    private int PRead(nint handle, long offset, Span<byte> buffer)
    {
        fixed (byte* data = buffer)
        {
            var result = nfs_pread(Context, handle, (ulong)offset, (ulong)buffer.Length, data);
            Check(result, "read");
            return result;
        }
    }

    private int Check(int result, string what)
    {
        if (result < 0)
        {
            var detail = $"{what}: {Marshal.PtrToStringUTF8(nfs_get_error(_context)) ?? ""} (errno {-result})";
            throw result == -28 /* ENOSPC */
                ? new SmException(SmErrors.SrNoSpace, SmErrors.NoSpaceMessage, detail)
                : new SmException(SmErrors.Eio, "NFS I/O error", detail);
        }
        return result;
    }

    [LibraryImport(Library)]
    private static partial nint nfs_init_context();

    [LibraryImport(Library)]
    private static partial void nfs_destroy_context(nint nfs);

    [LibraryImport(Library)]
    private static partial nint nfs_get_error(nint nfs);

    [LibraryImport(Library)]
    private static partial void nfs_set_timeout(nint nfs, int milliseconds);

    [LibraryImport(Library)]
    private static partial int nfs_set_version(nint nfs, int version);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_mount(nint nfs, string server, string exportname);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_lstat64(nint nfs, string path, ulong* st);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_opendir(nint nfs, string path, nint* nfsdir);

    [LibraryImport(Library)]
    private static partial nint nfs_readdir(nint nfs, nint nfsdir);

    [LibraryImport(Library)]
    private static partial void nfs_closedir(nint nfs, nint nfsdir);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_open(nint nfs, string path, int flags, nint* nfsfh);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_create(nint nfs, string path, int flags, int mode, nint* nfsfh);

    [LibraryImport(Library)]
    private static partial int nfs_close(nint nfs, nint nfsfh);

    [LibraryImport(Library)]
    private static partial int nfs_pread(nint nfs, nint nfsfh, ulong offset, ulong count, byte* buffer);

    [LibraryImport(Library)]
    private static partial int nfs_pwrite(nint nfs, nint nfsfh, ulong offset, ulong count, byte* buffer);

    [LibraryImport(Library)]
    private static partial int nfs_fsync(nint nfs, nint nfsfh);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_rename(nint nfs, string oldpath, string newpath);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_link(nint nfs, string oldpath, string newpath);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_unlink(nint nfs, string path);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_mkdir(nint nfs, string path);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_rmdir(nint nfs, string path);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nfs_statvfs64(nint nfs, string path, ulong* svfs);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint mount_getexports(string server);

    [LibraryImport(Library)]
    private static partial void mount_free_export_list(nint exports);
}

/// <summary>A path's kind and sizes over NFS.</summary>
internal readonly record struct NfsStat(uint Mode, long Size, long Used)
{
    public bool IsRegularFile => (Mode & 0xF000) == 0x8000;

    public bool IsDirectory => (Mode & 0xF000) == 0x4000;
}

/// <summary>A directory entry as NFSv3 READDIRPLUS returns it.</summary>
internal readonly record struct NfsEntry(string Name, uint Type, long Used)
{
    public bool IsRegularFile => Type == 1;

    public bool IsDirectory => Type == 2;
}
