using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Xapi.Protocol;

namespace Xapi.Server.Http;

/// <summary>
/// A reply on its way to the client. Up to <c>bufferLimit</c> bytes it is held and sent whole,
/// with a Content-Length, as real servers send every reply; past that it goes to the socket as it
/// is encoded (chunked), flushed at the encoder's checkpoints and paced by the client's reading,
/// so no reply holds more than the limit plus one flush, whatever its size.
/// </summary>
internal sealed class StreamedReply(HttpResponse response, long bufferLimit) : IReplyWriter, IDisposable
{
    // Once streaming, how much is handed to the socket at a time.
    private const int FlushBytes = 64 * 1024;

    private PooledBufferWriter? _buffer = new();
    private PipeWriter? _pipe;
    private long _unflushed;

    /// <summary>Whether the reply outgrew the buffer and is going out as it is encoded.</summary>
    public bool Streaming => _pipe is not null;

    public void Advance(int count)
    {
        if (_pipe is null)
        {
            _buffer!.Advance(count);
        }
        else
        {
            _pipe.Advance(count);
            _unflushed += count;
        }
    }

    public Memory<byte> GetMemory(int sizeHint = 0) => _pipe is null ? _buffer!.GetMemory(sizeHint) : _pipe.GetMemory(sizeHint);

    public Span<byte> GetSpan(int sizeHint = 0) => _pipe is null ? _buffer!.GetSpan(sizeHint) : _pipe.GetSpan(sizeHint);

    public async ValueTask CheckpointAsync(CancellationToken cancellationToken)
    {
        if (_pipe is null)
        {
            if (_buffer!.WrittenCount < bufferLimit)
            {
                return;
            }
            // Too large to hold: the headers go now, without a length, and the body as it comes.
            _pipe = response.BodyWriter;
            _buffer.CopyTo(_pipe);
            _buffer.Dispose();
            _buffer = null;
        }
        else if (_unflushed < FlushBytes)
        {
            return;
        }
        _unflushed = 0;
        var flushed = await _pipe.FlushAsync(cancellationToken).ConfigureAwait(false);
        if (flushed.IsCanceled || flushed.IsCompleted)
        {
            // The client went away: stop encoding for nobody.
            throw new OperationCanceledException("the client stopped reading the reply", cancellationToken);
        }
    }

    /// <summary>Sends what is held (with its length) or the rest of a streamed reply.</summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        if (_buffer is not null)
        {
            response.ContentLength = _buffer.WrittenCount;
            _buffer.CopyTo(response.BodyWriter);
        }
        await response.BodyWriter.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }
}
