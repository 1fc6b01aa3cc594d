using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Xapi.Storage.Nbd;

/// <summary>One extent of a BLOCK_STATUS answer in the <c>base:allocation</c> context.</summary>
public readonly record struct NbdExtent(long Offset, long Length, uint Flags)
{
    public bool Hole => (Flags & NbdProtocol.StateHole) != 0;

    /// <summary>The server promises the extent reads as zeros.</summary>
    public bool Zero => (Flags & NbdProtocol.StateZero) != 0;
}

/// <summary>
/// An NBD client over any stream (a Unix socket to qemu-nbd, in practice): fixed-newstyle
/// handshake with structured replies, <c>base:allocation</c> and NBD_OPT_GO, then pipelined
/// commands whose replies are matched by cookie. READ payloads land straight in the caller's
/// memory. Thread-safe: any number of callers may issue commands at once, up to
/// <see cref="MaxInFlight"/> requests go out before replies come back.
/// </summary>
public sealed class NbdClient : IAsyncDisposable
{
    private const int UnixSendBufferBytes = 4 << 20;

    /// <summary>How many requests may wait for their replies at once.</summary>
    public const int MaxInFlight = 16;

    /// <summary>
    /// Large reads are split into requests of this size and pipelined, so the server can work
    /// on several at once (qemu-nbd runs each request in its own coroutine).
    /// </summary>
    private const int ReadChunk = 4 << 20;

    private const uint BlockStatusChunk = 1u << 31;
    private const int MaxOptionReplyLength = 64 * 1024;
    private static readonly TimeSpan DisposeTimeout = TimeSpan.FromSeconds(30);

    private readonly Stream _stream;
    private readonly NbdStreamReader _reader;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly SemaphoreSlim _inFlight = new(MaxInFlight, MaxInFlight);
    private readonly Dictionary<ulong, Pending> _pending = [];
    private readonly CancellationTokenSource _closing = new();
    private Task _replyLoop = Task.CompletedTask;
    private ulong _nextCookie;
    private Exception? _failure;
    private uint _allocationContextId;
    private int _disposed;

    private NbdClient(Stream stream)
    {
        _stream = stream;
        _reader = new NbdStreamReader(stream);
    }

    public string ExportName { get; private set; } = "";

    public long Size { get; private set; }

    public ushort TransmissionFlags { get; private set; }

    public bool ReadOnly => (TransmissionFlags & NbdProtocol.TransmitReadOnly) != 0;

    public bool StructuredReplies { get; private set; }

    /// <summary>The server agreed to answer BLOCK_STATUS in the <c>base:allocation</c> context.</summary>
    public bool HasAllocationContext { get; private set; }

    public int MinimumBlockSize { get; private set; } = 1;

    public int PreferredBlockSize { get; private set; } = 4096;

    /// <summary>The largest READ or WRITE payload the server accepts.</summary>
    public int MaximumPayload { get; private set; } = NbdProtocol.DefaultMaxPayload;

    /// <summary>Connects to a Unix socket and negotiates <paramref name="exportName"/>.</summary>
    public static async Task<NbdClient> ConnectUnixAsync(string socketPath, string exportName, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        {
            // A unix socket holds what its sender's buffer allows (208 KiB by default), so a 2 MiB
            // write went to qemu-nbd in ten hand-overs; with 4 MiB a 1 GiB VHD import took
            // 1.5–1.8 s instead of 1.6–2.0 s on 2 cores. The kernel caps it at net.core.wmem_max.
            SendBufferSize = UnixSendBufferBytes,
        };
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return await ConnectAsync(new NetworkStream(socket, ownsSocket: true), exportName, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Negotiates <paramref name="exportName"/> over a connected stream, which the client then owns.</summary>
    public static async Task<NbdClient> ConnectAsync(Stream stream, string exportName, CancellationToken cancellationToken)
    {
        var client = new NbdClient(stream);
        try
        {
            await client.HandshakeAsync(exportName, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            client._reader.Dispose();
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        client._replyLoop = Task.Run(client.ReadRepliesAsync, CancellationToken.None);
        return client;
    }

    private async Task HandshakeAsync(string exportName, CancellationToken cancellationToken)
    {
        var greeting = await _reader.ReadExactAsync(18, cancellationToken).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting.Span) != NbdProtocol.NbdMagic)
        {
            throw new NbdException("the peer is not an NBD server");
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting.Span[8..]) != NbdProtocol.IHaveOpt)
        {
            throw new NbdException("the NBD server speaks only the oldstyle handshake");
        }
        var serverFlags = BinaryPrimitives.ReadUInt16BigEndian(greeting.Span[16..]);
        if ((serverFlags & NbdProtocol.FlagFixedNewstyle) == 0)
        {
            throw new NbdException("the NBD server does not offer the fixed newstyle handshake");
        }
        var noZeroes = (serverFlags & NbdProtocol.FlagNoZeroes) != 0;
        var clientFlags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(clientFlags, NbdProtocol.ClientFlagFixedNewstyle | (noZeroes ? NbdProtocol.ClientFlagNoZeroes : 0));
        await _stream.WriteAsync(clientFlags, cancellationToken).ConfigureAwait(false);

        await SendOptionAsync(NbdProtocol.OptStructuredReply, [], cancellationToken).ConfigureAwait(false);
        var (type, _) = await ReadOptionReplyAsync(NbdProtocol.OptStructuredReply, cancellationToken).ConfigureAwait(false);
        StructuredReplies = type == NbdProtocol.RepAck;

        var name = Encoding.UTF8.GetBytes(exportName);
        if (StructuredReplies)
        {
            var context = Encoding.UTF8.GetBytes(NbdProtocol.BaseAllocation);
            var data = new byte[4 + name.Length + 4 + 4 + context.Length];
            BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
            name.CopyTo(data, 4);
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(4 + name.Length), 1);
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(8 + name.Length), (uint)context.Length);
            context.CopyTo(data, 12 + name.Length);
            await SendOptionAsync(NbdProtocol.OptSetMetaContext, data, cancellationToken).ConfigureAwait(false);
            while (true)
            {
                var (reply, payload) = await ReadOptionReplyAsync(NbdProtocol.OptSetMetaContext, cancellationToken).ConfigureAwait(false);
                if (reply == NbdProtocol.RepMetaContext && payload.Length >= 4
                    && Encoding.UTF8.GetString(payload, 4, payload.Length - 4) == NbdProtocol.BaseAllocation)
                {
                    _allocationContextId = BinaryPrimitives.ReadUInt32BigEndian(payload);
                    HasAllocationContext = true;
                }
                else if (reply != NbdProtocol.RepMetaContext)
                {
                    break;
                }
            }
        }

        var go = new byte[4 + name.Length + 2 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(go, (uint)name.Length);
        name.CopyTo(go, 4);
        BinaryPrimitives.WriteUInt16BigEndian(go.AsSpan(4 + name.Length), 1);
        BinaryPrimitives.WriteUInt16BigEndian(go.AsSpan(6 + name.Length), NbdProtocol.InfoBlockSize);
        await SendOptionAsync(NbdProtocol.OptGo, go, cancellationToken).ConfigureAwait(false);
        var haveExport = false;
        while (true)
        {
            var (reply, payload) = await ReadOptionReplyAsync(NbdProtocol.OptGo, cancellationToken).ConfigureAwait(false);
            if ((reply & NbdProtocol.RepFlagError) != 0)
            {
                throw NbdException.ForOption(NbdProtocol.OptGo, reply, Encoding.UTF8.GetString(payload));
            }
            if (reply == NbdProtocol.RepAck)
            {
                break;
            }
            if (reply != NbdProtocol.RepInfo || payload.Length < 2)
            {
                continue;
            }
            switch (BinaryPrimitives.ReadUInt16BigEndian(payload))
            {
                case NbdProtocol.InfoExport when payload.Length >= 12:
                    Size = checked((long)BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(2)));
                    TransmissionFlags = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(10));
                    haveExport = true;
                    break;
                case NbdProtocol.InfoBlockSize when payload.Length >= 14:
                    MinimumBlockSize = (int)Math.Clamp(BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(2)), 1u, 1u << 16);
                    PreferredBlockSize = (int)Math.Clamp(BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(6)), 1u, 32u << 20);
                    MaximumPayload = (int)Math.Clamp(BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(10)), (uint)MinimumBlockSize, 1u << 30);
                    break;
            }
        }
        if (!haveExport)
        {
            throw new NbdException("the NBD server acknowledged GO without NBD_INFO_EXPORT");
        }
        ExportName = exportName;
    }

    private async Task SendOptionAsync(uint option, byte[] data, CancellationToken cancellationToken)
    {
        var message = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, NbdProtocol.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)data.Length);
        data.CopyTo(message, 16);
        await _stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
    }

    private async Task<(uint Type, byte[] Payload)> ReadOptionReplyAsync(uint option, CancellationToken cancellationToken)
    {
        var header = await _reader.ReadExactAsync(20, cancellationToken).ConfigureAwait(false);
        var magic = BinaryPrimitives.ReadUInt64BigEndian(header.Span);
        var repliedOption = BinaryPrimitives.ReadUInt32BigEndian(header.Span[8..]);
        var type = BinaryPrimitives.ReadUInt32BigEndian(header.Span[12..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.Span[16..]);
        if (magic != NbdProtocol.OptionReplyMagic || repliedOption != option)
        {
            throw new NbdException($"the NBD server sent a malformed reply to {NbdProtocol.OptionName(option)}");
        }
        if (length > MaxOptionReplyLength)
        {
            throw new NbdException($"the NBD server sent a {length}-byte reply to {NbdProtocol.OptionName(option)}");
        }
        var payload = new byte[length];
        await _reader.ReadIntoAsync(payload, cancellationToken).ConfigureAwait(false);
        return (type, payload);
    }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>, in pipelined requests.</summary>
    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        CheckRange(offset, buffer.Length);
        var chunk = Math.Min(MaximumPayload, ReadChunk);
        if (buffer.Length <= chunk)
        {
            return SendAsync(NbdProtocol.CmdRead, 0, offset, (uint)buffer.Length, buffer, default, cancellationToken);
        }
        var requests = new List<Task>((buffer.Length + chunk - 1) / chunk);
        for (var done = 0; done < buffer.Length; done += chunk)
        {
            var length = Math.Min(chunk, buffer.Length - done);
            requests.Add(SendAsync(NbdProtocol.CmdRead, 0, offset + done, (uint)length, buffer.Slice(done, length), default, cancellationToken));
        }
        return Task.WhenAll(requests);
    }

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        if (ReadOnly)
        {
            throw new InvalidOperationException("the NBD export is read-only");
        }
        var chunk = MaximumPayload;
        if (data.Length <= chunk)
        {
            return SendAsync(NbdProtocol.CmdWrite, 0, offset, (uint)data.Length, default, data, cancellationToken);
        }
        var requests = new List<Task>();
        for (var done = 0; done < data.Length; done += chunk)
        {
            var length = Math.Min(chunk, data.Length - done);
            requests.Add(SendAsync(NbdProtocol.CmdWrite, 0, offset + done, (uint)length, default, data.Slice(done, length), cancellationToken));
        }
        return Task.WhenAll(requests);
    }

    /// <summary>
    /// Zeroes a range without NBD_CMD_FLAG_NO_HOLE, so the server may punch holes; falls back to
    /// writing zeros when the server lacks WRITE_ZEROES.
    /// </summary>
    public async Task WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        if (ReadOnly)
        {
            throw new InvalidOperationException("the NBD export is read-only");
        }
        var requests = new List<Task>();
        if ((TransmissionFlags & NbdProtocol.TransmitSendWriteZeroes) != 0)
        {
            const long chunk = 1L << 30;
            for (var done = 0L; done < length; done += chunk)
            {
                var part = Math.Min(chunk, length - done);
                requests.Add(SendAsync(NbdProtocol.CmdWriteZeroes, 0, offset + done, (uint)part, default, default, cancellationToken));
            }
            await Task.WhenAll(requests).ConfigureAwait(false);
            return;
        }
        var zerosLength = (int)Math.Min(length, Math.Min(MaximumPayload, ReadChunk));
        var zeros = ArrayPool<byte>.Shared.Rent(zerosLength);
        try
        {
            Array.Clear(zeros, 0, zerosLength);
            for (var done = 0L; done < length; done += zerosLength)
            {
                var part = (int)Math.Min(zerosLength, length - done);
                requests.Add(SendAsync(NbdProtocol.CmdWrite, 0, offset + done, (uint)part, default, zeros.AsMemory(0, part), cancellationToken));
            }
            await Task.WhenAll(requests).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }

    /// <summary>Returns once the server has every completed write on stable storage.</summary>
    public Task FlushAsync(CancellationToken cancellationToken) =>
        (TransmissionFlags & NbdProtocol.TransmitSendFlush) == 0
            ? Task.CompletedTask
            : SendAsync(NbdProtocol.CmdFlush, 0, 0, 0, default, default, cancellationToken);

    /// <summary>
    /// One BLOCK_STATUS request from <paramref name="offset"/>: the extents the server chose to
    /// describe, which cover at least one byte and may stop before <paramref name="length"/>.
    /// </summary>
    public async Task<IReadOnlyList<NbdExtent>> BlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        if (!HasAllocationContext)
        {
            throw new NotSupportedException("the NBD server did not agree to base:allocation");
        }
        var extents = new List<NbdExtent>();
        await SendAsync(NbdProtocol.CmdBlockStatus, 0, offset, (uint)Math.Min(length, BlockStatusChunk), default, default, cancellationToken, extents).ConfigureAwait(false);
        if (extents.Count == 0 || extents[0].Length == 0)
        {
            throw new NbdException($"the NBD server described no extent at {offset}");
        }
        return extents;
    }

    private void CheckRange(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the NBD export of {Size} bytes");
        }
    }

    private async Task SendAsync(ushort command, ushort flags, long offset, uint length, Memory<byte> destination,
        ReadOnlyMemory<byte> payload, CancellationToken cancellationToken, List<NbdExtent>? extents = null)
    {
        await _inFlight.WaitAsync(cancellationToken).ConfigureAwait(false);
        Pending pending;
        try
        {
            pending = new Pending(command, offset, length, destination, extents);
            await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                ulong cookie;
                lock (_pending)
                {
                    if (_failure is not null)
                    {
                        throw new NbdException("the NBD connection is closed", _failure);
                    }
                    cookie = ++_nextCookie;
                    _pending.Add(cookie, pending);
                }
                var header = ArrayPool<byte>.Shared.Rent(NbdProtocol.RequestHeaderLength);
                try
                {
                    var span = header.AsSpan(0, NbdProtocol.RequestHeaderLength);
                    BinaryPrimitives.WriteUInt32BigEndian(span, NbdProtocol.RequestMagic);
                    BinaryPrimitives.WriteUInt16BigEndian(span[4..], flags);
                    BinaryPrimitives.WriteUInt16BigEndian(span[6..], command);
                    BinaryPrimitives.WriteUInt64BigEndian(span[8..], cookie);
                    BinaryPrimitives.WriteUInt64BigEndian(span[16..], (ulong)offset);
                    BinaryPrimitives.WriteUInt32BigEndian(span[24..], length);
                    // Once the header is out the request cannot be taken back: a cancellation
                    // from here on would desynchronise the stream, so only closing can stop it.
                    await _stream.WriteAsync(header.AsMemory(0, NbdProtocol.RequestHeaderLength), _closing.Token).ConfigureAwait(false);
                    if (!payload.IsEmpty)
                    {
                        await _stream.WriteAsync(payload, _closing.Token).ConfigureAwait(false);
                    }
                }
                catch (Exception ex)
                {
                    Fail(ex);
                    throw new NbdException("the NBD connection failed while sending", ex);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(header);
                }
            }
            finally
            {
                _sendLock.Release();
            }
        }
        catch
        {
            _inFlight.Release();
            throw;
        }
        try
        {
            // The reply loop may still be writing into the caller's buffer; a cancelled caller
            // must not get it back before then, so cancellation aborts the whole connection and
            // the wait below still ends only when the loop has let go of the request.
            using (cancellationToken.UnsafeRegister(static state => ((NbdClient)state!).Abort(), this))
            {
                await pending.Completion.Task.ConfigureAwait(false);
            }
        }
        catch (NbdException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        finally
        {
            _inFlight.Release();
        }
        if (pending.Error != 0)
        {
            throw NbdException.ForCommand(command, offset, length, pending.Error, pending.ErrorMessage);
        }
    }

    private void Abort()
    {
        Fail(new OperationCanceledException("an NBD request was cancelled"));
        _closing.Cancel();
        _stream.Dispose();
    }

    private void Fail(Exception failure)
    {
        List<Pending> orphans;
        lock (_pending)
        {
            _failure ??= failure;
            if (!_replyLoop.IsCompleted)
            {
                // The reply loop fails the pending requests itself once it stops reading.
                return;
            }
            orphans = [.. _pending.Values];
            _pending.Clear();
        }
        foreach (var orphan in orphans)
        {
            orphan.Completion.TrySetException(new NbdException("the NBD connection is closed", failure));
        }
    }

    private async Task ReadRepliesAsync()
    {
        Exception? failure = null;
        try
        {
            while (true)
            {
                var head = await _reader.ReadExactAsync(4, _closing.Token).ConfigureAwait(false);
                var magic = BinaryPrimitives.ReadUInt32BigEndian(head.Span);
                if (magic == NbdProtocol.SimpleReplyMagic)
                {
                    await ReadSimpleReplyAsync().ConfigureAwait(false);
                }
                else if (magic == NbdProtocol.StructuredReplyMagic && StructuredReplies)
                {
                    await ReadStructuredChunkAsync().ConfigureAwait(false);
                }
                else
                {
                    throw new NbdException($"the NBD server sent a reply with magic {magic:x8}");
                }
            }
        }
        catch (Exception ex)
        {
            failure = ex;
        }
        List<Pending> orphans;
        lock (_pending)
        {
            _failure ??= failure;
            orphans = [.. _pending.Values];
            _pending.Clear();
        }
        foreach (var orphan in orphans)
        {
            orphan.Completion.TrySetException(new NbdException("the NBD connection is closed", _failure));
        }
    }

    private Pending Find(ulong cookie, bool remove)
    {
        lock (_pending)
        {
            if (!_pending.TryGetValue(cookie, out var pending))
            {
                throw new NbdException($"the NBD server replied to unknown cookie {cookie}");
            }
            if (remove)
            {
                _pending.Remove(cookie);
            }
            return pending;
        }
    }

    private async Task ReadSimpleReplyAsync()
    {
        var header = await _reader.ReadExactAsync(12, _closing.Token).ConfigureAwait(false);
        var error = BinaryPrimitives.ReadUInt32BigEndian(header.Span);
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(header.Span[4..]);
        var pending = Find(cookie, remove: false);
        if (error == 0 && pending.Command == NbdProtocol.CmdRead)
        {
            await _reader.ReadIntoAsync(pending.Destination, _closing.Token).ConfigureAwait(false);
        }
        pending.Error = error;
        Find(cookie, remove: true);
        pending.Completion.TrySetResult();
    }

    private async Task ReadStructuredChunkAsync()
    {
        var header = await _reader.ReadExactAsync(16, _closing.Token).ConfigureAwait(false);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(header.Span);
        var type = BinaryPrimitives.ReadUInt16BigEndian(header.Span[2..]);
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(header.Span[4..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.Span[12..]);
        var pending = Find(cookie, remove: false);
        switch (type)
        {
            case NbdProtocol.ReplyTypeNone:
                if (length != 0)
                {
                    throw new NbdException("the NBD server sent a NONE chunk with a payload");
                }
                break;
            case NbdProtocol.ReplyTypeOffsetData when pending.Command == NbdProtocol.CmdRead && length >= 8:
            {
                var at = (long)BinaryPrimitives.ReadUInt64BigEndian((await _reader.ReadExactAsync(8, _closing.Token).ConfigureAwait(false)).Span);
                var target = pending.Slice(at, length - 8);
                await _reader.ReadIntoAsync(target, _closing.Token).ConfigureAwait(false);
                break;
            }
            case NbdProtocol.ReplyTypeOffsetHole when pending.Command == NbdProtocol.CmdRead && length == 12:
            {
                var body = await _reader.ReadExactAsync(12, _closing.Token).ConfigureAwait(false);
                var at = (long)BinaryPrimitives.ReadUInt64BigEndian(body.Span);
                pending.Slice(at, BinaryPrimitives.ReadUInt32BigEndian(body.Span[8..])).Span.Clear();
                break;
            }
            case NbdProtocol.ReplyTypeBlockStatus when pending.Extents is not null && length >= 4 && (length - 4) % 8 == 0:
            {
                var id = BinaryPrimitives.ReadUInt32BigEndian((await _reader.ReadExactAsync(4, _closing.Token).ConfigureAwait(false)).Span);
                var position = pending.Offset + pending.Extents.Sum(e => e.Length);
                for (var i = 0u; i < (length - 4) / 8; i++)
                {
                    var descriptor = await _reader.ReadExactAsync(8, _closing.Token).ConfigureAwait(false);
                    var extentLength = BinaryPrimitives.ReadUInt32BigEndian(descriptor.Span);
                    var extentFlags = BinaryPrimitives.ReadUInt32BigEndian(descriptor.Span[4..]);
                    if (id == _allocationContextId)
                    {
                        pending.Extents.Add(new NbdExtent(position, extentLength, extentFlags));
                        position += extentLength;
                    }
                }
                break;
            }
            case var error when (error & NbdProtocol.ReplyTypeErrorBit) != 0 && length >= 6:
            {
                var body = await _reader.ReadExactAsync(6, _closing.Token).ConfigureAwait(false);
                pending.Error = BinaryPrimitives.ReadUInt32BigEndian(body.Span);
                var messageLength = BinaryPrimitives.ReadUInt16BigEndian(body.Span[4..]);
                if (messageLength > length - 6)
                {
                    throw new NbdException("the NBD server sent a malformed error chunk");
                }
                var message = new byte[messageLength];
                await _reader.ReadIntoAsync(message, _closing.Token).ConfigureAwait(false);
                pending.ErrorMessage = Encoding.UTF8.GetString(message);
                await _reader.SkipAsync(length - 6 - messageLength, _closing.Token).ConfigureAwait(false);
                if (pending.Error == 0)
                {
                    pending.Error = NbdProtocol.EIO;
                }
                break;
            }
            default:
                throw new NbdException($"the NBD server sent an unexpected chunk of type {type} for {NbdProtocol.CommandName(pending.Command)}");
        }
        if ((flags & NbdProtocol.ReplyFlagDone) != 0)
        {
            Find(cookie, remove: true);
            pending.Completion.TrySetResult();
        }
    }

    /// <summary>Sends NBD_CMD_DISC once every request has its reply, then closes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        // A server that never answers must not hang the caller's cleanup.
        using var patience = CancellationTokenSource.CreateLinkedTokenSource(_closing.Token);
        patience.CancelAfter(DisposeTimeout);
        try
        {
            for (var i = 0; i < MaxInFlight; i++)
            {
                await _inFlight.WaitAsync(patience.Token).ConfigureAwait(false);
            }
            if (_failure is null)
            {
                var disc = new byte[NbdProtocol.RequestHeaderLength];
                BinaryPrimitives.WriteUInt32BigEndian(disc, NbdProtocol.RequestMagic);
                BinaryPrimitives.WriteUInt16BigEndian(disc.AsSpan(6), NbdProtocol.CmdDisc);
                await _sendLock.WaitAsync(patience.Token).ConfigureAwait(false);
                await _stream.WriteAsync(disc, patience.Token).ConfigureAwait(false);
                await _stream.FlushAsync(patience.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The connection is gone already; closing is all that is left.
        }
        _closing.Cancel();
        await _stream.DisposeAsync().ConfigureAwait(false);
        await _replyLoop.ConfigureAwait(false);
        _reader.Dispose();
    }

    private sealed class Pending(ushort command, long offset, uint length, Memory<byte> destination, List<NbdExtent>? extents)
    {
        public ushort Command { get; } = command;

        public long Offset { get; } = offset;

        public Memory<byte> Destination { get; } = destination;

        public List<NbdExtent>? Extents { get; } = extents;

        public uint Error { get; set; }

        public string? ErrorMessage { get; set; }

        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The part of the destination a chunk for <c>[at, at + count)</c> fills; refuses chunks outside the request.</summary>
        public Memory<byte> Slice(long at, long count)
        {
            if (at < Offset || count < 0 || at - Offset + count > length)
            {
                throw new NbdException($"the NBD server sent a chunk {at}+{count} outside the request {Offset}+{length}");
            }
            return Destination.Slice((int)(at - Offset), (int)count);
        }
    }
}
