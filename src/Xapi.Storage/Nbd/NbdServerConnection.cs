using System.Buffers;
using System.Buffers.Binary;
using System.Net.Security;
using System.Security.Authentication;
using System.Text;
using Microsoft.Extensions.Logging;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Nbd;

/// <summary>One client of an <see cref="NbdServer"/>: option haggling, then transmission.</summary>
internal sealed partial class NbdServerConnection : IAsyncDisposable
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly long _id;
    private readonly string _remote;
    private readonly NbdServerOptions _options;
    private readonly SslStreamCertificateContext? _certificate;
    private readonly Func<string, CancellationToken, ValueTask<IDiskImage?>> _resolve;
    private readonly ILogger _logger;
    private readonly NbdStreamReader _reader;
    private Stream _stream;
    private bool _tls;
    private bool _noZeroes;
    private bool _structured;

    /// <summary>The export the last SET_META_CONTEXT selected <c>base:allocation</c> for.</summary>
    private string? _allocationExport;

    private bool _allocation;
    private IDiskImage? _image;
    private string _export = "";
    private long _requests;
    private long _bytesRead;

    public NbdServerConnection(long id, string remote, Stream stream, NbdServerOptions options, SslStreamCertificateContext? certificate,
        Func<string, CancellationToken, ValueTask<IDiskImage?>> resolve, ILogger logger)
    {
        _id = id;
        _remote = remote;
        _stream = stream;
        _options = options;
        _certificate = certificate;
        _resolve = resolve;
        _logger = logger;
        _reader = new NbdStreamReader(stream);
    }

    /// <summary>What the peer did wrong; the connection closes and the reason is logged.</summary>
    private sealed class ProtocolViolation(string reason) : Exception(reason);

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        string reason;
        try
        {
            bool transmit;
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                handshake.CancelAfter(_options.HandshakeTimeout);
                try
                {
                    transmit = await HandshakeAsync(handshake.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new ProtocolViolation($"no export chosen within {_options.HandshakeTimeout}");
                }
            }
            if (!transmit)
            {
                reason = "the client ended the handshake";
            }
            else
            {
                _logger.LogInformation("NBD connection {Connection} from {Remote} serves {Export} ({Size} bytes, TLS {Tls}, structured replies {Structured}, base:allocation {Allocation})",
                    _id, _remote, _export, _image!.Size, _tls, _structured, _allocation);
                reason = await TransmitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ProtocolViolation ex)
        {
            reason = ex.Message;
        }
        catch (Exception ex) when (ex is EndOfStreamException or IOException or AuthenticationException or InvalidDataException)
        {
            reason = ex.Message;
        }
        _logger.LogInformation("NBD connection {Connection} from {Remote} closed ({Reason}) after {Requests} requests and {Bytes} bytes read",
            _id, _remote, reason, _requests, _bytesRead);
    }

    /// <summary>Returns true when the client chose an export and transmission starts.</summary>
    private async Task<bool> HandshakeAsync(CancellationToken cancellationToken)
    {
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, NbdProtocol.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), NbdProtocol.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), NbdProtocol.FlagFixedNewstyle | NbdProtocol.FlagNoZeroes);
        await _stream.WriteAsync(greeting, cancellationToken).ConfigureAwait(false);

        var clientFlags = BinaryPrimitives.ReadUInt32BigEndian((await _reader.ReadExactAsync(4, cancellationToken).ConfigureAwait(false)).Span);
        if ((clientFlags & NbdProtocol.ClientFlagFixedNewstyle) == 0)
        {
            throw new ProtocolViolation("the client does not speak the fixed newstyle handshake");
        }
        if ((clientFlags & ~(NbdProtocol.ClientFlagFixedNewstyle | NbdProtocol.ClientFlagNoZeroes)) != 0)
        {
            throw new ProtocolViolation($"unknown client flags 0x{clientFlags:x}");
        }
        _noZeroes = (clientFlags & NbdProtocol.ClientFlagNoZeroes) != 0;

        for (var count = 0; ; count++)
        {
            var header = await _reader.ReadExactAsync(16, cancellationToken).ConfigureAwait(false);
            var magic = BinaryPrimitives.ReadUInt64BigEndian(header.Span);
            var option = BinaryPrimitives.ReadUInt32BigEndian(header.Span[8..]);
            var length = BinaryPrimitives.ReadUInt32BigEndian(header.Span[12..]);
            if (magic != NbdProtocol.IHaveOpt)
            {
                throw new ProtocolViolation("an option without the IHAVEOPT magic");
            }
            if (count >= _options.MaxOptions)
            {
                throw new ProtocolViolation($"more than {_options.MaxOptions} options");
            }
            if (length > _options.MaxOptionLength)
            {
                if (option != NbdProtocol.OptExportName)
                {
                    await ReplyErrorAsync(option, NbdProtocol.RepErrTooBig, "option too long", cancellationToken).ConfigureAwait(false);
                }
                throw new ProtocolViolation($"option {NbdProtocol.OptionName(option)} of {length} bytes is over the limit of {_options.MaxOptionLength}");
            }
            var data = new byte[length];
            await _reader.ReadIntoAsync(data, cancellationToken).ConfigureAwait(false);
            _logger.LogDebug("NBD connection {Connection} option {Option} ({Length} bytes)", _id, NbdProtocol.OptionName(option), length);

            if (_options.RequireTls && !_tls && option is not (NbdProtocol.OptStartTls or NbdProtocol.OptAbort))
            {
                if (option == NbdProtocol.OptExportName)
                {
                    throw new ProtocolViolation("EXPORT_NAME before STARTTLS while TLS is required");
                }
                await ReplyErrorAsync(option, NbdProtocol.RepErrTlsReqd, "TLS is required", cancellationToken).ConfigureAwait(false);
                continue;
            }

            switch (option)
            {
                case NbdProtocol.OptExportName:
                    await ExportNameAsync(data, cancellationToken).ConfigureAwait(false);
                    return true;
                case NbdProtocol.OptAbort:
                    try
                    {
                        await ReplyAsync(option, NbdProtocol.RepAck, [], cancellationToken).ConfigureAwait(false);
                    }
                    catch (IOException)
                    {
                        // The client may close without waiting for the acknowledgement.
                    }
                    return false;
                case NbdProtocol.OptList:
                    await ReplyErrorAsync(option, NbdProtocol.RepErrPolicy, "exports are not listed", cancellationToken).ConfigureAwait(false);
                    break;
                case NbdProtocol.OptStartTls:
                    await StartTlsAsync(data, cancellationToken).ConfigureAwait(false);
                    break;
                case NbdProtocol.OptStructuredReply:
                    if (data.Length != 0)
                    {
                        await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "STRUCTURED_REPLY takes no data", cancellationToken).ConfigureAwait(false);
                        break;
                    }
                    _structured = true;
                    await ReplyAsync(option, NbdProtocol.RepAck, [], cancellationToken).ConfigureAwait(false);
                    break;
                case NbdProtocol.OptListMetaContext or NbdProtocol.OptSetMetaContext:
                    await MetaContextAsync(option, data, cancellationToken).ConfigureAwait(false);
                    break;
                case NbdProtocol.OptInfo or NbdProtocol.OptGo:
                    if (await InfoAsync(option, data, cancellationToken).ConfigureAwait(false) && option == NbdProtocol.OptGo)
                    {
                        return true;
                    }
                    break;
                default:
                    await ReplyErrorAsync(option, NbdProtocol.RepErrUnsup, "", cancellationToken).ConfigureAwait(false);
                    break;
            }
        }
    }

    private async Task ExportNameAsync(byte[] data, CancellationToken cancellationToken)
    {
        if (!TryDecode(data, out var name))
        {
            throw new ProtocolViolation("an export name that is not UTF-8");
        }
        var (image, refusal) = await ResolveAsync(name, cancellationToken).ConfigureAwait(false);
        if (image is null)
        {
            // EXPORT_NAME has no error reply: closing is the only refusal (as xapi-nbd does).
            throw new ProtocolViolation($"export {ExportLabel(name)} refused ({NbdException.OptionReplyName(refusal)})");
        }
        Select(name, image);
        var reply = new byte[_noZeroes ? 10 : 134];
        BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)image.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags);
        await _stream.WriteAsync(reply, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Answers INFO or GO; returns true when an export was found (and, for GO, selected).</summary>
    private async Task<bool> InfoAsync(uint option, byte[] data, CancellationToken cancellationToken)
    {
        if (data.Length < 6)
        {
            await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "option too short", cancellationToken).ConfigureAwait(false);
            return false;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6
            || data.Length != 4 + (int)nameLength + 2 + (2 * BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(4 + (int)nameLength))))
        {
            await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "lengths do not add up", cancellationToken).ConfigureAwait(false);
            return false;
        }
        if (!TryDecode(data.AsSpan(4, (int)nameLength), out var name))
        {
            await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "the export name is not UTF-8", cancellationToken).ConfigureAwait(false);
            return false;
        }
        var (image, refusal) = await ResolveAsync(name, cancellationToken).ConfigureAwait(false);
        if (image is null)
        {
            await ReplyErrorAsync(option, refusal, refusal == NbdProtocol.RepErrPolicy ? "access denied" : "no such export", cancellationToken).ConfigureAwait(false);
            return false;
        }
        try
        {
            var export = new byte[12];
            BinaryPrimitives.WriteUInt16BigEndian(export, NbdProtocol.InfoExport);
            BinaryPrimitives.WriteUInt64BigEndian(export.AsSpan(2), (ulong)image.Size);
            BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(10), TransmissionFlags);
            await ReplyAsync(option, NbdProtocol.RepInfo, export, cancellationToken).ConfigureAwait(false);
            // Always sent: qemu asks for it, and it tells every client how large a READ may be.
            var blockSize = new byte[14];
            BinaryPrimitives.WriteUInt16BigEndian(blockSize, NbdProtocol.InfoBlockSize);
            BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(2), 1);
            BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(6), 4096);
            BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(10), (uint)_options.MaxRequestLength);
            await ReplyAsync(option, NbdProtocol.RepInfo, blockSize, cancellationToken).ConfigureAwait(false);
            await ReplyAsync(option, NbdProtocol.RepAck, [], cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await image.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        if (option == NbdProtocol.OptInfo)
        {
            await image.DisposeAsync().ConfigureAwait(false);
            return true;
        }
        Select(name, image);
        return true;
    }

    private void Select(string name, IDiskImage image)
    {
        _image = image;
        _export = ExportLabel(name);
        // BLOCK_STATUS only for the export the meta context was negotiated for (spec, SET_META_CONTEXT).
        _allocation = _structured && _allocationExport == name;
    }

    private async Task<(IDiskImage? Image, uint Refusal)> ResolveAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            var image = await _resolve(name, cancellationToken).ConfigureAwait(false);
            if (image is null)
            {
                _logger.LogInformation("NBD connection {Connection} from {Remote} asked for unknown export {Export}", _id, _remote, ExportLabel(name));
            }
            return (image, NbdProtocol.RepErrUnknown);
        }
        catch (UnauthorizedAccessException ex)
        {
            _logger.LogWarning("NBD connection {Connection} from {Remote} refused export {Export}: {Reason}", _id, _remote, ExportLabel(name), ex.Message);
            return (null, NbdProtocol.RepErrPolicy);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            _logger.LogWarning(ex, "NBD connection {Connection} from {Remote}: opening export {Export} failed", _id, _remote, ExportLabel(name));
            return (null, NbdProtocol.RepErrUnknown);
        }
    }

    private async Task StartTlsAsync(byte[] data, CancellationToken cancellationToken)
    {
        if (data.Length != 0)
        {
            await ReplyErrorAsync(NbdProtocol.OptStartTls, NbdProtocol.RepErrInvalid, "STARTTLS takes no data", cancellationToken).ConfigureAwait(false);
            return;
        }
        if (_certificate is null)
        {
            await ReplyErrorAsync(NbdProtocol.OptStartTls, NbdProtocol.RepErrUnsup, "TLS is not configured", cancellationToken).ConfigureAwait(false);
            return;
        }
        if (_tls)
        {
            await ReplyErrorAsync(NbdProtocol.OptStartTls, NbdProtocol.RepErrInvalid, "TLS is already on", cancellationToken).ConfigureAwait(false);
            return;
        }
        await ReplyAsync(NbdProtocol.OptStartTls, NbdProtocol.RepAck, [], cancellationToken).ConfigureAwait(false);
        var tls = new SslStream(_stream, leaveInnerStreamOpen: false);
        _reader.ReplaceStream(tls);
        _stream = tls;
        await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
        {
            ServerCertificateContext = _certificate,
            ClientCertificateRequired = false,
            CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
        }, cancellationToken).ConfigureAwait(false);
        _tls = true;
        // The spec: everything negotiated before STARTTLS is forgotten.
        _structured = false;
        _allocationExport = null;
        _logger.LogDebug("NBD connection {Connection} is on {Protocol}", _id, tls.SslProtocol);
    }

    private async Task MetaContextAsync(uint option, byte[] data, CancellationToken cancellationToken)
    {
        var set = option == NbdProtocol.OptSetMetaContext;
        if (set)
        {
            _allocationExport = null;
            if (!_structured)
            {
                await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "structured replies first", cancellationToken).ConfigureAwait(false);
                return;
            }
        }
        if (!TryParseMetaContext(data, out var name, out var queries))
        {
            await ReplyErrorAsync(option, NbdProtocol.RepErrInvalid, "malformed meta context request", cancellationToken).ConfigureAwait(false);
            return;
        }
        var matches = set
            ? queries.Contains(NbdProtocol.BaseAllocation)
            : queries.Count == 0 || queries.Any(q => q is "base:" or NbdProtocol.BaseAllocation);
        if (matches)
        {
            var context = Encoding.UTF8.GetBytes(NbdProtocol.BaseAllocation);
            var reply = new byte[4 + context.Length];
            BinaryPrimitives.WriteUInt32BigEndian(reply, set ? 1u : 0u);
            context.CopyTo(reply, 4);
            await ReplyAsync(option, NbdProtocol.RepMetaContext, reply, cancellationToken).ConfigureAwait(false);
            if (set)
            {
                _allocationExport = name;
            }
        }
        await ReplyAsync(option, NbdProtocol.RepAck, [], cancellationToken).ConfigureAwait(false);
    }

    private static bool TryParseMetaContext(byte[] data, out string name, out List<string> queries)
    {
        name = "";
        queries = [];
        var span = data.AsSpan();
        if (span.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(span) is var nameLength && nameLength > span.Length - 8)
        {
            return false;
        }
        if (!TryDecode(span.Slice(4, (int)nameLength), out name))
        {
            return false;
        }
        span = span[(4 + (int)nameLength)..];
        var count = BinaryPrimitives.ReadUInt32BigEndian(span);
        span = span[4..];
        for (var i = 0u; i < count; i++)
        {
            if (span.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(span) is var length && length > span.Length - 4)
            {
                return false;
            }
            if (!TryDecode(span.Slice(4, (int)length), out var query))
            {
                return false;
            }
            queries.Add(query);
            span = span[(4 + (int)length)..];
        }
        return span.IsEmpty;
    }

    private ushort TransmissionFlags =>
        // Read-only, so several connections to one export always see the same data (MULTI_CONN).
        NbdProtocol.TransmitHasFlags | NbdProtocol.TransmitReadOnly | NbdProtocol.TransmitSendFlush | NbdProtocol.TransmitCanMultiConn;

    private Task ReplyErrorAsync(uint option, uint error, string message, CancellationToken cancellationToken) =>
        ReplyAsync(option, error, Encoding.UTF8.GetBytes(message), cancellationToken);

    private async Task ReplyAsync(uint option, uint type, byte[] data, CancellationToken cancellationToken)
    {
        var reply = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(reply, NbdProtocol.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
        data.CopyTo(reply, 20);
        if ((type & NbdProtocol.RepFlagError) != 0)
        {
            _logger.LogInformation("NBD connection {Connection} from {Remote}: {Option} answered {Reply}", _id, _remote, NbdProtocol.OptionName(option), NbdException.OptionReplyName(type));
        }
        await _stream.WriteAsync(reply, cancellationToken).ConfigureAwait(false);
    }

    private static bool TryDecode(ReadOnlySpan<byte> bytes, out string text)
    {
        try
        {
            text = StrictUtf8.GetString(bytes);
            return !text.Contains('\0', StringComparison.Ordinal);
        }
        catch (DecoderFallbackException)
        {
            text = "";
            return false;
        }
    }

    /// <summary>The export name fit for a log: the daemon's names carry a session reference after '?'.</summary>
    internal static string ExportLabel(string name)
    {
        var query = name.IndexOf('?', StringComparison.Ordinal);
        var label = query < 0 ? name : name[..query] + "?…";
        return label.Length > 200 ? label[..200] + "…" : label;
    }

    public async ValueTask DisposeAsync()
    {
        if (_image is not null)
        {
            try
            {
                await _image.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _logger.LogWarning(ex, "NBD connection {Connection}: closing export {Export} failed", _id, _export);
            }
            _image = null;
        }
        await _stream.DisposeAsync().ConfigureAwait(false);
        _reader.Dispose();
    }
}
