using System.Buffers;

namespace Xapi.Storage.Formats.Vhd;

/// <summary>
/// Reads a stream strictly front to back (an HTTP request body cannot seek), knowing its position and,
/// when the client sent Content-Length, its length; the end of the stream becomes a
/// <see cref="VhdFormatException"/> that says what was being read.
/// </summary>
internal sealed class ForwardReader(Stream stream, long? length, Action<long, long>? progress) : IDisposable
{
    private const int ScratchSize = 1 << 20;

    private byte[]? _scratch;

    public long Position { get; private set; }

    public long? Length => length;

    public async ValueTask ReadExactlyAsync(Memory<byte> buffer, string what, CancellationToken cancellationToken)
    {
        if (length is { } total && Position + buffer.Length > total)
        {
            throw new VhdFormatException($"the VHD is {total} bytes long, too short for {what} at bytes {Position} to {Position + buffer.Length}");
        }
        var done = 0;
        while (done < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer[done..], cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                throw new VhdFormatException($"the VHD stream ends early, at byte {Position + done}, inside {what}");
            }
            done += read;
        }
        Position += buffer.Length;
        progress?.Invoke(Position, length ?? -1);
    }

    /// <summary>Fills as much of <paramref name="buffer"/> as the stream has; less only at its end.</summary>
    public async ValueTask<int> ReadUpToAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (length is { } total)
        {
            buffer = buffer[..(int)Math.Min(buffer.Length, total - Position)];
        }
        var done = 0;
        while (done < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer[done..], cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }
            done += read;
        }
        Position += done;
        progress?.Invoke(Position, length ?? -1);
        return done;
    }

    /// <summary>Reads and discards up to <paramref name="offset"/>; an offset already passed is a structure out of order.</summary>
    public async ValueTask SkipToAsync(long offset, string what, CancellationToken cancellationToken)
    {
        if (offset < Position)
        {
            throw new VhdFormatException($"{what} is at byte {offset}, behind byte {Position} which the stream has already passed: the VHD's structures overlap or are out of order");
        }
        while (Position < offset)
        {
            _scratch ??= ArrayPool<byte>.Shared.Rent(ScratchSize);
            var chunk = (int)Math.Min(_scratch.Length, offset - Position);
            await ReadExactlyAsync(_scratch.AsMemory(0, chunk), what, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Reads to the end of the stream, keeping its last <c>tail.Length</c> bytes; returns how many bytes were read.</summary>
    public async ValueTask<long> ReadToEndKeepingTailAsync(Memory<byte> tail, CancellationToken cancellationToken)
    {
        _scratch ??= ArrayPool<byte>.Shared.Rent(ScratchSize);
        var total = 0L;
        while (true)
        {
            var read = await ReadUpToAsync(_scratch.AsMemory(0, ScratchSize), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return total;
            }
            total += read;
            if (read >= tail.Length)
            {
                _scratch.AsSpan(read - tail.Length, tail.Length).CopyTo(tail.Span);
            }
            else
            {
                tail.Span[read..].CopyTo(tail.Span);
                _scratch.AsSpan(0, read).CopyTo(tail.Span[^read..]);
            }
        }
    }

    public void Dispose()
    {
        if (_scratch is not null)
        {
            ArrayPool<byte>.Shared.Return(_scratch);
            _scratch = null;
        }
    }
}
