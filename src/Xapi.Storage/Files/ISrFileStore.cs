using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Files;

/// <summary>
/// The directory a file-based SR keeps its images in, wherever it lives: a local directory
/// (<see cref="LocalSrFileStore"/>) or a directory on an NFS export reached without a kernel
/// mount (<see cref="NfsSrFileStore"/>). The chain driver does every file operation through this,
/// so the same chain, journal and collector logic runs over both. Paths are the store's own
/// (local paths, or paths inside the NFS export); only <see cref="PathOf"/> and
/// <see cref="PathIn"/> make them, and both refuse any name that could leave the SR's directory.
/// </summary>
public interface ISrFileStore : IDisposable
{
    /// <summary>The SR's directory.</summary>
    string Root { get; }

    /// <summary>Where interrupted multi-step operations leave their journals.</summary>
    string JournalDirectory { get; }

    /// <summary>
    /// Whether <c>qemu-img commit</c> can write into a backing file here. qemu 7.2's nfs driver
    /// cannot reopen a backing file read-write, so over NFS the collector merges the other way
    /// (the child absorbs its parent by a safe rebase).
    /// </summary>
    bool CanCommitIntoBacking { get; }

    /// <summary>The path of the file <c>&lt;uuid&gt;&lt;extension&gt;</c> in <see cref="Root"/>; refuses any other name.</summary>
    string PathOf(string uuid, string extension);

    /// <summary>The path of <paramref name="name"/> (one plain file name, no separators) in a directory of the store.</summary>
    string PathIn(string directory, string name);

    /// <summary>Refuses a root that is missing or a symbolic link (SR unavailable).</summary>
    void CheckRoot();

    /// <summary>Makes the SR's directory; refuses with SR exists when it is there and not empty.</summary>
    void CreateRoot();

    /// <summary>Removes the SR's directory and everything in it.</summary>
    void DeleteRoot();

    /// <summary>The uuids of the regular files named <c>&lt;uuid&gt;&lt;extension&gt;</c> in the root, and the names skipped.</summary>
    (IReadOnlyList<string> Uuids, IReadOnlyList<string> Skipped) List(string extension);

    /// <summary>The paths of the regular files in <paramref name="directory"/> whose names end with <paramref name="suffix"/>, in ordinal order.</summary>
    IReadOnlyList<string> Files(string directory, string suffix);

    /// <summary>Whether anything (file, directory, link) has this name.</summary>
    bool Exists(string path);

    /// <summary>Whether the path is a regular file (not a symbolic link, device or directory).</summary>
    bool IsRegularFile(string path);

    string ReadText(string path);

    /// <summary>Writes a small file durably: a temporary name, flushed to stable storage, renamed over the target.</summary>
    void WriteDurably(string path, string content);

    /// <summary>Renames, replacing the target atomically.</summary>
    void Move(string from, string to);

    /// <summary>Removes a file; a missing file is not an error.</summary>
    void Delete(string path);

    void CreateDirectory(string path);

    /// <summary>Makes renames and unlinks in the root durable.</summary>
    void SyncDirectory();

    void SyncDirectory(string directory);

    /// <summary>
    /// Gives <paramref name="existing"/> a second name. False when the filesystem does not do hard
    /// links (the caller then renames instead); any other failure raises.
    /// </summary>
    bool TryLink(string existing, string newName);

    /// <summary>The filesystem's size and the bytes still available to this client.</summary>
    (long Size, long Available) Space();

    /// <summary>Bytes all the SR's files occupy on disk.</summary>
    long UsedBytes();

    /// <summary>Bytes a file occupies on disk (its allocated blocks, not its length); 0 when missing.</summary>
    long AllocatedBytes(string path);

    /// <summary>Reads a qcow2 header; false when the file is missing, not a qcow2 image or damaged.</summary>
    bool TryReadHeader(string path, out Qcow2Header header);

    /// <summary>
    /// The regular file at <paramref name="path"/> opened for reading with this process's own
    /// reads, or null when the store has no local file to give (over NFS, only qemu's driver and
    /// libnfs reach the files).
    /// </summary>
    Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForReading(string path);

    /// <summary>What qemu-img and qemu-nbd open for the path: the local path, or an <c>nfs://</c> URL.</summary>
    string ImageOf(string path);

    /// <summary>The backing-file name an image of this SR records for the image <c>&lt;uuid&gt;&lt;extension&gt;</c>.</summary>
    string BackingNameOf(string uuid, string extension);

    /// <summary>The uuid a recorded backing-file name points at, or null when it is not an image of this SR.</summary>
    string? UuidOfBacking(string backingName, string extension);
}
