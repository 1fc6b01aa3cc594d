using System.Runtime.CompilerServices;

namespace Xapi.Storage.DataPath;

/// <summary>
/// A thin disk's writes, held within the room its SR has: once the data written would pass the
/// budget the write is refused as SR full, before it reaches the image, so a full SR answers
/// SR_FULL instead of leaving a half-written image on a full filesystem. Rewrites count too,
/// which errs on the side of refusing early.
/// </summary>
public sealed class SpaceLimitedImage(IDiskImage inner, long budget) : IDiskImage
{
    private long _written;

    public long Size => inner.Size;

    public bool Writable => inner.Writable;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => inner.ReadAsync(offset, buffer, cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var after = Interlocked.Add(ref _written, data.Length);
        if (after > budget)
        {
            throw new SrFullException(after, budget);
        }
        return inner.WriteAsync(offset, data, cancellationToken);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken) => inner.WriteZeroesAsync(offset, length, cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, CancellationToken cancellationToken) => inner.MapAsync(offset, length, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
