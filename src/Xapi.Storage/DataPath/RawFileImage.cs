using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;

namespace Xapi.Storage.DataPath;

/// <summary>A disk stored as a raw file or block device (ISO images, LVM volumes).</summary>
public sealed class RawFileImage : IDiskImage
{
    private readonly SafeFileHandle _handle;

    private RawFileImage(SafeFileHandle handle, long size, bool writable)
    {
        _handle = handle;
        Size = size;
        Writable = writable;
    }

    public static RawFileImage Open(string path, bool writable)
    {
        var handle = File.OpenHandle(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read, FileShare.ReadWrite);
        // Block devices report a file length of 0; their end offset is their size.
        var size = RandomAccess.GetLength(handle) is > 0 and var length ? length : SparseFile.EndOffset(handle);
        return new RawFileImage(handle, size, writable);
    }

    public long Size { get; }

    public bool Writable { get; }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, buffer.Length, Size);
        var done = 0;
        while (done < buffer.Length)
        {
            var read = await RandomAccess.ReadAsync(_handle, buffer[done..], offset + done, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                buffer.Span[done..].Clear();
                return;
            }
            done += read;
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, data.Length);
        return RandomAccess.WriteAsync(_handle, data, offset, cancellationToken);
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, length);
        var zeros = new byte[(int)Math.Min(length, 1 << 20)];
        for (var done = 0L; done < length; done += zeros.Length)
        {
            var chunk = (int)Math.Min(zeros.Length, length - done);
            await RandomAccess.WriteAsync(_handle, zeros.AsMemory(0, chunk), offset + done, cancellationToken).ConfigureAwait(false);
        }
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        RandomAccess.FlushToDisk(_handle);
        return ValueTask.CompletedTask;
    }

    public async IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, length, Size);
        await Task.CompletedTask.ConfigureAwait(false);
        foreach (var extent in SparseFile.Extents(_handle, offset, length))
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return extent;
        }
    }

    public ValueTask DisposeAsync()
    {
        _handle.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Argument checks shared by the images.</summary>
public static class ImageRange
{
    public static void Check(long offset, long length, long size)
    {
        if (offset < 0 || length < 0 || offset > size || length > size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the disk of {size} bytes");
        }
    }

    public static void CheckWritable(IDiskImage image, long offset, long length)
    {
        if (!image.Writable)
        {
            throw new InvalidOperationException("the disk was opened read-only");
        }
        Check(offset, length, image.Size);
    }
}
