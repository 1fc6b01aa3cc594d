using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Extensions.Logging;

namespace Xapi.Storage.Nbd;

internal sealed partial class NbdServerConnection
{
    /// <summary>The unit of the per-connection budget of reply buffers.</summary>
    private const int BudgetUnit = 1 << 20;

    private readonly SemaphoreSlim _writeLock = new(1, 1);

    /// <summary>Serves requests until DISC, EOF, idle timeout or a protocol violation; returns why it stopped.</summary>
    private async Task<string> TransmitAsync(CancellationToken cancellationToken)
    {
        var units = (_options.MaxInFlightBytesPerConnection + BudgetUnit - 1) / BudgetUnit;
        using var budget = new SemaphoreSlim(units, units);
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(abort.Token);
        var running = new List<Task>();
        try
        {
            while (true)
            {
                idle.CancelAfter(_options.IdleTimeout);
                ReadOnlyMemory<byte> header;
                try
                {
                    header = await _reader.ReadExactAsync(NbdProtocol.RequestHeaderLength, idle.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!abort.IsCancellationRequested)
                {
                    return $"idle for {_options.IdleTimeout}";
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    return "a reply could not be sent";
                }
                catch (EndOfStreamException)
                {
                    return "the client closed the connection without DISC";
                }
                var span = header.Span;
                if (BinaryPrimitives.ReadUInt32BigEndian(span) != NbdProtocol.RequestMagic)
                {
                    throw new ProtocolViolation("a request without the request magic");
                }
                var flags = BinaryPrimitives.ReadUInt16BigEndian(span[4..]);
                var command = BinaryPrimitives.ReadUInt16BigEndian(span[6..]);
                var cookie = BinaryPrimitives.ReadUInt64BigEndian(span[8..]);
                var offset = BinaryPrimitives.ReadUInt64BigEndian(span[16..]);
                var length = BinaryPrimitives.ReadUInt32BigEndian(span[24..]);
                _requests++;
                switch (command)
                {
                    case NbdProtocol.CmdRead:
                        if (length > _options.MaxRequestLength || !InRange(offset, length))
                        {
                            await SendErrorAsync(command, cookie, NbdProtocol.EInval, length > _options.MaxRequestLength ? "request too long" : "request past the end", abort.Token).ConfigureAwait(false);
                            break;
                        }
                        var needed = Math.Max(1, (int)((length + BudgetUnit - 1) / BudgetUnit));
                        // Only this loop takes from the budget, so waiting one unit at a time cannot deadlock.
                        for (var i = 0; i < needed; i++)
                        {
                            await budget.WaitAsync(abort.Token).ConfigureAwait(false);
                        }
                        running.Add(ReadAsync(cookie, (long)offset, (int)length, budget, needed, abort));
                        if (running.Count > 64)
                        {
                            running.RemoveAll(t => t.IsCompleted);
                        }
                        break;
                    case NbdProtocol.CmdBlockStatus:
                        await BlockStatusAsync(flags, cookie, offset, length, abort.Token).ConfigureAwait(false);
                        break;
                    case NbdProtocol.CmdFlush:
                        // Nothing is ever written through this server, so there is nothing to flush.
                        await SendSimpleAsync(cookie, 0, abort.Token).ConfigureAwait(false);
                        break;
                    case NbdProtocol.CmdWrite:
                        if (length > _options.MaxRequestLength)
                        {
                            throw new ProtocolViolation($"a WRITE of {length} bytes");
                        }
                        // The payload must be consumed to find the next request.
                        await _reader.SkipAsync(length, idle.Token).ConfigureAwait(false);
                        await SendSimpleAsync(cookie, NbdProtocol.EPerm, abort.Token).ConfigureAwait(false);
                        break;
                    case NbdProtocol.CmdTrim or NbdProtocol.CmdWriteZeroes:
                        await SendSimpleAsync(cookie, NbdProtocol.EPerm, abort.Token).ConfigureAwait(false);
                        break;
                    case NbdProtocol.CmdDisc:
                        return "DISC";
                    default:
                        await SendErrorAsync(command, cookie, NbdProtocol.EInval, "unsupported command", abort.Token).ConfigureAwait(false);
                        break;
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return "a reply could not be sent";
        }
        finally
        {
            // The spec: requests sent before DISC are still answered.
            await Task.WhenAll(running).ConfigureAwait(false);
        }
    }

    private bool InRange(ulong offset, uint length) =>
        offset <= (ulong)_image!.Size && length <= (ulong)_image.Size - offset;

    /// <summary>
    /// Reads from the image straight into the reply buffer behind room for the header, then
    /// sends header and data in one write.
    /// </summary>
    private async Task ReadAsync(ulong cookie, long offset, int length, SemaphoreSlim budget, int units, CancellationTokenSource abort)
    {
        var headerLength = _structured ? NbdProtocol.StructuredReplyHeaderLength + 8 : NbdProtocol.SimpleReplyHeaderLength;
        var buffer = ArrayPool<byte>.Shared.Rent(headerLength + length);
        try
        {
            try
            {
                await _image!.ReadAsync(offset, buffer.AsMemory(headerLength, length), abort.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                _logger.LogWarning(ex, "NBD connection {Connection}: reading {Export} at {Offset}+{Length} failed", _id, _export, offset, length);
                await SendErrorAsync(NbdProtocol.CmdRead, cookie, NbdProtocol.EIO, "read failed", abort.Token).ConfigureAwait(false);
                return;
            }
            var header = buffer.AsSpan(0, headerLength);
            if (!_structured)
            {
                BinaryPrimitives.WriteUInt32BigEndian(header, NbdProtocol.SimpleReplyMagic);
                BinaryPrimitives.WriteUInt32BigEndian(header[4..], 0);
                BinaryPrimitives.WriteUInt64BigEndian(header[8..], cookie);
                await WriteAsync(buffer.AsMemory(0, headerLength + length), abort.Token).ConfigureAwait(false);
            }
            else if (length == 0)
            {
                // OFFSET_DATA may not be empty; a NONE chunk ends the reply.
                WriteChunkHeader(header, NbdProtocol.ReplyTypeNone, cookie, 0);
                await WriteAsync(buffer.AsMemory(0, NbdProtocol.StructuredReplyHeaderLength), abort.Token).ConfigureAwait(false);
            }
            else
            {
                WriteChunkHeader(header, NbdProtocol.ReplyTypeOffsetData, cookie, (uint)length + 8);
                BinaryPrimitives.WriteUInt64BigEndian(header[NbdProtocol.StructuredReplyHeaderLength..], (ulong)offset);
                await WriteAsync(buffer.AsMemory(0, headerLength + length), abort.Token).ConfigureAwait(false);
            }
            Interlocked.Add(ref _bytesRead, length);
        }
        catch (Exception ex)
        {
            if (!abort.IsCancellationRequested)
            {
                _logger.LogDebug(ex, "NBD connection {Connection}: sending a READ reply failed", _id);
                await abort.CancelAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            budget.Release(units);
        }
    }

    private async Task BlockStatusAsync(ushort flags, ulong cookie, ulong offset, uint length, CancellationToken cancellationToken)
    {
        if (!_allocation)
        {
            await SendErrorAsync(NbdProtocol.CmdBlockStatus, cookie, NbdProtocol.EInval, "no meta context was negotiated", cancellationToken).ConfigureAwait(false);
            return;
        }
        if (length == 0 || !InRange(offset, length))
        {
            await SendErrorAsync(NbdProtocol.CmdBlockStatus, cookie, NbdProtocol.EInval, "request past the end", cancellationToken).ConfigureAwait(false);
            return;
        }
        var limit = (flags & NbdProtocol.CmdFlagReqOne) != 0 ? 1 : _options.MaxExtentsPerReply;
        var extents = new List<(uint Length, uint Flags)>();
        try
        {
            await foreach (var extent in _image!.MapAsync((long)offset, length, cancellationToken).ConfigureAwait(false))
            {
                var state = extent.Zero ? NbdProtocol.StateHole | NbdProtocol.StateZero : 0u;
                if (extents.Count > 0 && extents[^1].Flags == state)
                {
                    extents[^1] = (extents[^1].Length + (uint)extent.Length, state);
                }
                else if (extents.Count < limit)
                {
                    extents.Add(((uint)extent.Length, state));
                }
                else
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            _logger.LogWarning(ex, "NBD connection {Connection}: mapping {Export} at {Offset}+{Length} failed", _id, _export, offset, length);
            extents.Clear();
        }
        if (extents.Count == 0)
        {
            await SendErrorAsync(NbdProtocol.CmdBlockStatus, cookie, NbdProtocol.EIO, "mapping failed", cancellationToken).ConfigureAwait(false);
            return;
        }
        var payloadLength = 4 + (8 * extents.Count);
        var buffer = ArrayPool<byte>.Shared.Rent(NbdProtocol.StructuredReplyHeaderLength + payloadLength);
        try
        {
            var span = buffer.AsSpan(0, NbdProtocol.StructuredReplyHeaderLength + payloadLength);
            WriteChunkHeader(span, NbdProtocol.ReplyTypeBlockStatus, cookie, (uint)payloadLength);
            BinaryPrimitives.WriteUInt32BigEndian(span[20..], 1);
            for (var i = 0; i < extents.Count; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(span[(24 + (8 * i))..], extents[i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(span[(28 + (8 * i))..], extents[i].Flags);
            }
            await WriteAsync(buffer.AsMemory(0, span.Length), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void WriteChunkHeader(Span<byte> header, ushort type, ulong cookie, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(header, NbdProtocol.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(header[4..], NbdProtocol.ReplyFlagDone);
        BinaryPrimitives.WriteUInt16BigEndian(header[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(header[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(header[16..], length);
    }

    /// <summary>An error reply: a structured error chunk where the spec forbids simple replies (READ, BLOCK_STATUS).</summary>
    private async Task SendErrorAsync(ushort command, ulong cookie, uint error, string message, CancellationToken cancellationToken)
    {
        _logger.LogDebug("NBD connection {Connection}: {Command} answered {Error} ({Message})", _id, NbdProtocol.CommandName(command), NbdException.ErrorName(error), message);
        if (!_structured || command is not (NbdProtocol.CmdRead or NbdProtocol.CmdBlockStatus))
        {
            await SendSimpleAsync(cookie, error, cancellationToken).ConfigureAwait(false);
            return;
        }
        var text = System.Text.Encoding.UTF8.GetBytes(message);
        var chunk = new byte[NbdProtocol.StructuredReplyHeaderLength + 6 + text.Length];
        WriteChunkHeader(chunk, NbdProtocol.ReplyTypeError, cookie, (uint)(6 + text.Length));
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(20), error);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(24), (ushort)text.Length);
        text.CopyTo(chunk, 26);
        await WriteAsync(chunk, cancellationToken).ConfigureAwait(false);
    }

    private Task SendSimpleAsync(ulong cookie, uint error, CancellationToken cancellationToken)
    {
        var reply = new byte[NbdProtocol.SimpleReplyHeaderLength];
        BinaryPrimitives.WriteUInt32BigEndian(reply, NbdProtocol.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(4), error);
        BinaryPrimitives.WriteUInt64BigEndian(reply.AsSpan(8), cookie);
        return WriteAsync(reply, cancellationToken);
    }

    private async Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
