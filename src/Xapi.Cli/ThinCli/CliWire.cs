using System.Buffers.Binary;
using System.Text;

namespace Xapi.Cli.ThinCli;

/// <summary>
/// The thin-CLI framing: the version greeting, then messages as a 32-bit little-endian length
/// followed by the message (tag 9 command, 10 response, 11 blob; strings length-prefixed).
/// </summary>
public static class CliWire
{
    public const string Magic = "XenSource thin CLI protocol";
    public const int Major = 0;
    public const int Minor = 2;

    /// <summary>Messages are small (a printed line, an error); a file never travels framed.</summary>
    public const int MaxMessageBytes = 64 * 1024 * 1024;

    private const int CommandTag = 9;
    private const int ResponseTag = 10;
    private const int BlobTag = 11;

    private const int PrintTag = 0;
    private const int LoadTag = 1;
    private const int PromptTag = 3;
    private const int ExitTag = 4;
    private const int ChunkTag = 7;
    private const int EndTag = 8;
    private const int HttpGetTag = 12;
    private const int HttpPutTag = 13;
    private const int ErrorTag = 14;
    private const int DebugTag = 15;
    private const int PrintStderrTag = 16;
    private const int HttpConnectTag = 17;

    public static byte[] Greeting()
    {
        var greeting = new byte[Magic.Length + 8];
        Encoding.ASCII.GetBytes(Magic, greeting);
        BinaryPrimitives.WriteInt32LittleEndian(greeting.AsSpan(Magic.Length), Major);
        BinaryPrimitives.WriteInt32LittleEndian(greeting.AsSpan(Magic.Length + 4), Minor);
        return greeting;
    }

    /// <summary>Reads the peer's greeting: its version, or null when the peer is no thin-CLI server or client.</summary>
    public static async Task<(int Major, int Minor)?> ReadGreetingAsync(Stream stream, CancellationToken cancellationToken)
    {
        var greeting = new byte[Magic.Length + 8];
        var read = await ReadAtMostAsync(stream, greeting, cancellationToken).ConfigureAwait(false);
        if (read < Magic.Length || Encoding.ASCII.GetString(greeting, 0, Magic.Length) != Magic)
        {
            return null;
        }
        if (read < greeting.Length)
        {
            throw new EndOfStreamException("the thin-CLI greeting ended early");
        }
        return (BinaryPrimitives.ReadInt32LittleEndian(greeting.AsSpan(Magic.Length)),
            BinaryPrimitives.ReadInt32LittleEndian(greeting.AsSpan(Magic.Length + 4)));
    }

    public static byte[] Encode(CliMessage message)
    {
        var payload = new List<byte>(64);
        switch (message)
        {
            case CliPrint print:
                Command(payload, PrintTag);
                String(payload, print.Text);
                break;
            case CliPrintStderr print:
                Command(payload, PrintStderrTag);
                String(payload, print.Text);
                break;
            case CliDebug debug:
                Command(payload, DebugTag);
                String(payload, debug.Text);
                break;
            case CliLoad load:
                Command(payload, LoadTag);
                String(payload, load.FileName);
                break;
            case CliHttpGet get:
                Command(payload, HttpGetTag);
                String(payload, get.FileName);
                String(payload, get.Url);
                break;
            case CliHttpPut put:
                Command(payload, HttpPutTag);
                String(payload, put.FileName);
                String(payload, put.Url);
                break;
            case CliHttpConnect connect:
                Command(payload, HttpConnectTag);
                String(payload, connect.Url);
                break;
            case CliPrompt:
                Command(payload, PromptTag);
                break;
            case CliExit exit:
                Command(payload, ExitTag);
                Int(payload, exit.Code);
                break;
            case CliError error:
                Command(payload, ErrorTag);
                String(payload, error.Code);
                Int(payload, error.Parameters.Count);
                foreach (var parameter in error.Parameters)
                {
                    String(payload, parameter);
                }
                break;
            case CliResponse response:
                Int(payload, ResponseTag);
                Int(payload, (int)response.Kind);
                break;
            case CliBlobChunk chunk:
                Int(payload, BlobTag);
                Int(payload, ChunkTag);
                Int(payload, chunk.Length);
                break;
            case CliBlobEnd:
                Int(payload, BlobTag);
                Int(payload, EndTag);
                break;
            default:
                throw new ArgumentException($"no encoding for {message.GetType().Name}", nameof(message));
        }
        var framed = new byte[payload.Count + 4];
        BinaryPrimitives.WriteInt32LittleEndian(framed, payload.Count);
        payload.CopyTo(framed, 4);
        return framed;
    }

    public static async Task WriteAsync(Stream stream, CliMessage message, CancellationToken cancellationToken)
    {
        await stream.WriteAsync(Encode(message), cancellationToken).ConfigureAwait(false);
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads one message; null at a clean end of stream.</summary>
    public static async Task<CliMessage?> ReadAsync(Stream stream, CancellationToken cancellationToken)
    {
        var head = new byte[4];
        var read = await ReadAtMostAsync(stream, head, cancellationToken).ConfigureAwait(false);
        if (read == 0)
        {
            return null;
        }
        if (read < 4)
        {
            throw new EndOfStreamException("a thin-CLI message ended inside its length");
        }
        var length = BinaryPrimitives.ReadInt32LittleEndian(head);
        if (length is < 4 or > MaxMessageBytes)
        {
            throw new InvalidDataException($"a thin-CLI message of {length} bytes");
        }
        var body = new byte[length];
        if (await ReadAtMostAsync(stream, body, cancellationToken).ConfigureAwait(false) < length)
        {
            throw new EndOfStreamException("a thin-CLI message ended early");
        }
        return Decode(body);
    }

    public static CliMessage Decode(ReadOnlySpan<byte> body)
    {
        var reader = new SpanReader(body);
        CliMessage message = reader.Int() switch
        {
            CommandTag => reader.Int() switch
            {
                PrintTag => new CliPrint(reader.String()),
                PrintStderrTag => new CliPrintStderr(reader.String()),
                DebugTag => new CliDebug(reader.String()),
                LoadTag => new CliLoad(reader.String()),
                HttpGetTag => new CliHttpGet(reader.String(), reader.String()),
                HttpPutTag => new CliHttpPut(reader.String(), reader.String()),
                HttpConnectTag => new CliHttpConnect(reader.String()),
                PromptTag => new CliPrompt(),
                ExitTag => new CliExit(reader.Int()),
                ErrorTag => ReadError(ref reader),
                var tag => throw new InvalidDataException($"unknown thin-CLI command tag {tag}"),
            },
            ResponseTag => reader.Int() switch
            {
                (int)CliResponseKind.Ok => new CliResponse(CliResponseKind.Ok),
                (int)CliResponseKind.Failed => new CliResponse(CliResponseKind.Failed),
                (int)CliResponseKind.Wait => new CliResponse(CliResponseKind.Wait),
                var tag => throw new InvalidDataException($"unknown thin-CLI response tag {tag}"),
            },
            BlobTag => reader.Int() switch
            {
                ChunkTag => new CliBlobChunk(reader.Int()),
                EndTag => new CliBlobEnd(),
                var tag => throw new InvalidDataException($"unknown thin-CLI blob tag {tag}"),
            },
            var tag => throw new InvalidDataException($"unknown thin-CLI message tag {tag}"),
        };
        return message;
    }

    private static CliError ReadError(ref SpanReader reader)
    {
        var code = reader.String();
        var count = reader.Int();
        if (count < 0 || count > reader.Remaining / 4)
        {
            throw new InvalidDataException($"a thin-CLI error with {count} parameters");
        }
        var parameters = new string[count];
        for (var i = 0; i < count; i++)
        {
            parameters[i] = reader.String();
        }
        return new CliError(code, parameters);
    }

    /// <summary>Fills the buffer unless the stream ends first; returns how much was read.</summary>
    public static async Task<int> ReadAtMostAsync(Stream stream, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer[total..], cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }
            total += read;
        }
        return total;
    }

    private static void Command(List<byte> payload, int tag)
    {
        Int(payload, CommandTag);
        Int(payload, tag);
    }

    private static void Int(List<byte> payload, int value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, value);
        payload.AddRange(bytes);
    }

    private static void String(List<byte> payload, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        Int(payload, bytes.Length);
        payload.AddRange(bytes);
    }

    private ref struct SpanReader(ReadOnlySpan<byte> span)
    {
        private ReadOnlySpan<byte> _rest = span;

        public readonly int Remaining => _rest.Length;

        public int Int()
        {
            if (_rest.Length < 4)
            {
                throw new InvalidDataException("a thin-CLI message ended inside an integer");
            }
            var value = BinaryPrimitives.ReadInt32LittleEndian(_rest);
            _rest = _rest[4..];
            return value;
        }

        public string String()
        {
            var length = Int();
            if (length < 0 || length > _rest.Length)
            {
                throw new InvalidDataException($"a thin-CLI string of {length} bytes");
            }
            var value = Encoding.UTF8.GetString(_rest[..length]);
            _rest = _rest[length..];
            return value;
        }
    }
}
