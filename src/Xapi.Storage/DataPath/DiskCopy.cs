using System.Buffers;

namespace Xapi.Storage.DataPath;

/// <summary>Copies a disk's data extents into another, skipping holes, with progress and cancellation.</summary>
public static class DiskCopy
{
    public const int ChunkBytes = 4 << 20;

    /// <param name="targetIsEmpty">The target reads as zeros already (a new VDI): holes need no writes.</param>
    /// <param name="progress">Called with the fraction done.</param>
    public static async Task CopyAsync(IDiskImage source, IDiskImage target, IReadOnlyList<DiskExtent>? only, bool targetIsEmpty, Action<double>? progress, CancellationToken cancellationToken)
    {
        var extents = only ?? await ToListAsync(source.MapAsync(0, source.Size, cancellationToken), cancellationToken).ConfigureAwait(false);
        var total = Math.Max(1, extents.Sum(e => e.Length));
        var done = 0L;
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            foreach (var extent in extents)
            {
                if (extent.Zero)
                {
                    if (!targetIsEmpty)
                    {
                        await target.WriteZeroesAsync(extent.Offset, extent.Length, cancellationToken).ConfigureAwait(false);
                    }
                    done += extent.Length;
                    continue;
                }
                for (var offset = extent.Offset; offset < extent.End; offset += ChunkBytes)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var length = (int)Math.Min(ChunkBytes, extent.End - offset);
                    var chunk = buffer.AsMemory(0, length);
                    await source.ReadAsync(offset, chunk, cancellationToken).ConfigureAwait(false);
                    if (chunk.Span.IndexOfAnyExcept((byte)0) < 0)
                    {
                        if (!targetIsEmpty)
                        {
                            await target.WriteZeroesAsync(offset, length, cancellationToken).ConfigureAwait(false);
                        }
                    }
                    else
                    {
                        await target.WriteAsync(offset, chunk, cancellationToken).ConfigureAwait(false);
                    }
                    done += length;
                    progress?.Invoke((double)done / total);
                }
            }
            await target.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public static async Task<List<DiskExtent>> ToListAsync(IAsyncEnumerable<DiskExtent> extents, CancellationToken cancellationToken)
    {
        var list = new List<DiskExtent>();
        await foreach (var extent in extents.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            list.Add(extent);
        }
        return list;
    }
}
