using System.Buffers;

namespace Xapi.Storage.Nbd;

/// <summary>
/// Reads fixed-size protocol headers from a stream through a small pooled buffer, and large
/// payloads straight into their destination, so a 32 MiB READ costs no extra copy.
/// </summary>
internal sealed class NbdStreamReader : IDisposable
{
    private const int BufferSize = 64 * 1024;
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
    private Stream _stream;
    private int _start;
    private int _end;

    public NbdStreamReader(Stream stream) => _stream = stream;

    public int Buffered => _end - _start;

    /// <summary>Switches to a new stream over the same connection (STARTTLS); nothing may be left unread.</summary>
    public void ReplaceStream(Stream stream)
    {
        if (Buffered != 0)
        {
            throw new InvalidDataException("the peer sent data before the TLS handshake");
        }
        _stream = stream;
    }

    /// <summary>Returns the next <paramref name="count"/> bytes, valid until the next call.</summary>
    public async ValueTask<ReadOnlyMemory<byte>> ReadExactAsync(int count, CancellationToken cancellationToken)
    {
        if (count > _buffer.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count));
        }
        if (Buffered < count)
        {
            if (_buffer.Length - _start < count)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, Buffered);
                _end = Buffered;
                _start = 0;
            }
            while (Buffered < count)
            {
                var read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new EndOfStreamException("the peer closed the connection");
                }
                _end += read;
            }
        }
        var result = _buffer.AsMemory(_start, count);
        _start += count;
        if (_start == _end)
        {
            _start = _end = 0;
        }
        return result;
    }

    public async ValueTask ReadIntoAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        var copied = Math.Min(Buffered, destination.Length);
        _buffer.AsMemory(_start, copied).CopyTo(destination);
        _start += copied;
        if (_start == _end)
        {
            _start = _end = 0;
        }
        if (copied < destination.Length)
        {
            await _stream.ReadExactlyAsync(destination[copied..], cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask SkipAsync(long count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            var chunk = (int)Math.Min(count, BufferSize);
            await ReadExactAsync(chunk, cancellationToken).ConfigureAwait(false);
            count -= chunk;
        }
    }

    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, []);
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
