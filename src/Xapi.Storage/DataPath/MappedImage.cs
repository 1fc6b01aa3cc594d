using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;

namespace Xapi.Storage.DataPath;

/// <summary>
/// A read-only disk whose data runs lie unencoded in files (a qcow2 chain's clusters, as the
/// chain's map gives them), read with <c>pread</c> on those files instead of through an image
/// server: exports and copies then move each byte once, where a qemu-nbd hop moves it three
/// times. The map is the one taken at open: what another process writes to the chain after that
/// is not seen (as with any reader holding an image's metadata). Safe against the collector,
/// which only ever writes into a parent at offsets its child covers, and never frees a cluster.
/// </summary>
public sealed class MappedImage : IDiskImage
{
    /// <summary>A run of the disk read from <c>Layer</c> at <c>FileOffset</c>, or zeros when <c>Layer</c> is <see cref="Zeros"/>.</summary>
    public readonly record struct Run(long Start, long Length, int Layer, long FileOffset)
    {
        public long End => Start + Length;
    }

    public const int Zeros = -1;

    private readonly SafeFileHandle[] _layers;
    private readonly Run[] _runs;

    private MappedImage(long size, SafeFileHandle[] layers, Run[] runs)
    {
        Size = size;
        _layers = layers;
        _runs = runs;
    }

    /// <summary>
    /// Takes ownership of <paramref name="layers"/>. The runs must cover <c>[0, size)</c> in order,
    /// without gaps or overlaps, each naming one of the layers or <see cref="Zeros"/>.
    /// </summary>
    public static MappedImage Create(long size, IReadOnlyList<SafeFileHandle> layers, IEnumerable<Run> runs)
    {
        var merged = new List<Run>();
        var position = 0L;
        foreach (var run in runs)
        {
            if (run.Start != position || run.Length <= 0 || run.Layer < Zeros || run.Layer >= layers.Count || run.FileOffset < 0)
            {
                throw new ArgumentException($"the map's run {run} does not follow on from {position} or names no layer", nameof(runs));
            }
            position = run.End;
            if (merged.Count > 0 && merged[^1] is var last && last.Layer == run.Layer && (run.Layer == Zeros || last.FileOffset + last.Length == run.FileOffset))
            {
                merged[^1] = last with { Length = last.Length + run.Length };
            }
            else
            {
                merged.Add(run);
            }
        }
        if (position != size)
        {
            throw new ArgumentException($"the map covers {position} bytes of a disk of {size}", nameof(runs));
        }
        return new MappedImage(size, [.. layers], [.. merged]);
    }

    public long Size { get; }

    public bool Writable => false;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, buffer.Length, Size);
        var index = RunAt(offset);
        while (buffer.Length > 0)
        {
            var run = _runs[index++];
            var count = (int)Math.Min(buffer.Length, run.End - offset);
            var piece = buffer[..count];
            if (run.Layer == Zeros)
            {
                piece.Span.Clear();
            }
            else
            {
                await ReadExactlyAsync(_layers[run.Layer], piece, run.FileOffset + (offset - run.Start), cancellationToken).ConfigureAwait(false);
            }
            offset += count;
            buffer = buffer[count..];
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => throw ReadOnly();

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken) => throw ReadOnly();

    public ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public async IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, length, Size);
        await Task.CompletedTask.ConfigureAwait(false);
        var end = offset + length;
        DiskExtent? pending = null;
        for (var index = length == 0 ? _runs.Length : RunAt(offset); index < _runs.Length && _runs[index].Start < end; index++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var run = _runs[index];
            var start = Math.Max(run.Start, offset);
            var extent = new DiskExtent(start, Math.Min(run.End, end) - start, run.Layer == Zeros);
            if (pending is { } last && last.Zero == extent.Zero)
            {
                pending = last with { Length = last.Length + extent.Length };
                continue;
            }
            if (pending is { } done)
            {
                yield return done;
            }
            pending = extent;
        }
        if (pending is { } final)
        {
            yield return final;
        }
    }

    public ValueTask DisposeAsync()
    {
        foreach (var layer in _layers)
        {
            layer.Dispose();
        }
        return ValueTask.CompletedTask;
    }

    private int RunAt(long offset)
    {
        int low = 0, high = _runs.Length - 1;
        while (low < high)
        {
            var middle = (low + high + 1) / 2;
            if (_runs[middle].Start <= offset)
            {
                low = middle;
            }
            else
            {
                high = middle - 1;
            }
        }
        return low;
    }

    private static async ValueTask ReadExactlyAsync(SafeFileHandle file, Memory<byte> buffer, long position, CancellationToken cancellationToken)
    {
        while (buffer.Length > 0)
        {
            var read = await RandomAccess.ReadAsync(file, buffer, position, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                // A cluster past the file's end: the chain was cut short behind our back.
                throw new IOException($"the image file ends before offset {position}, where its map says data lies");
            }
            position += read;
            buffer = buffer[read..];
        }
    }

    private static InvalidOperationException ReadOnly() => new("the disk was opened read-only");
}
