using System.Runtime.CompilerServices;

namespace Xapi.Storage.DataPath;

/// <summary>A disk that stores nothing: reads are zeros, writes are dropped (the dummy SR).</summary>
public sealed class ZeroImage(long size, bool writable) : IDiskImage
{
    public long Size { get; } = size;

    public bool Writable { get; } = writable;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, buffer.Length, Size);
        buffer.Span.Clear();
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, data.Length);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, length);
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public async IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, length, Size);
        await Task.CompletedTask.ConfigureAwait(false);
        if (length > 0)
        {
            yield return new DiskExtent(offset, length, Zero: true);
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
