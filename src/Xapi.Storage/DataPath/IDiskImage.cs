namespace Xapi.Storage.DataPath;

/// <summary>
/// A virtual disk's bytes as the data path sees them (HTTP import/export, NBD, copy), whatever
/// stores them: a qcow2 chain behind qemu-nbd, a raw file or logical volume, nothing at all.
/// Offsets and lengths are in bytes; reads past <see cref="Size"/> are refused.
/// </summary>
public interface IDiskImage : IAsyncDisposable
{
    /// <summary>The virtual size: what a guest sees.</summary>
    long Size { get; }

    bool Writable { get; }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>; holes read as zeros.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Makes a range read as zeros, leaving it unallocated where the format can.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken);

    /// <summary>Returns once every acknowledged write is on stable storage.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken);

    /// <summary>
    /// The extents of <c>[offset, offset + length)</c> in order and without gaps, each saying
    /// whether it certainly reads as zeros (a hole); data extents may still hold zeros.
    /// </summary>
    IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, CancellationToken cancellationToken);
}

/// <summary>A run of a disk that either holds data or certainly reads as zeros.</summary>
public readonly record struct DiskExtent(long Offset, long Length, bool Zero)
{
    public long End => Offset + Length;
}
