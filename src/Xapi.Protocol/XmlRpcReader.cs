using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Xml;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>
/// Parses XML-RPC <c>methodCall</c>s and <c>methodResponse</c>s. DTDs are prohibited (so no entity
/// expansion and no external resolution), and document size and nesting depth are bounded.
/// </summary>
/// <remarks>
/// Control characters in a call's strings (raw, as Python's xmlrpc.client sends them, or as
/// character references) are read rather than refused as malformed XML, so that the dispatcher
/// refuses them with the same XenAPI error as over JSON-RPC. Lone surrogates are not text at all
/// and make the call malformed, as over JSON-RPC.
/// </remarks>
public static class XmlRpcReader
{
    private static XmlReaderSettings Settings(RpcLimits limits, int documentChars = 0) => new()
    {
        DtdProcessing = DtdProcessing.Prohibit,
        XmlResolver = null,
        MaxCharactersInDocument = Math.Max(limits.MaxBodyBytes, documentChars),
        CheckCharacters = false,
        MaxCharactersFromEntities = 0,
        IgnoreComments = true,
        IgnoreProcessingInstructions = true,
        CloseInput = false,
    };

    public static RpcRequest ReadCall(ReadOnlyMemory<byte> body, RpcLimits limits)
    {
        try
        {
            body = ControlsAsReferences(body);
            using var reader = OpenUtf8(body.Span, Settings(limits, body.Length));
            reader.MoveToContent();
            Expect(reader, "methodCall");
            string? method = null;
            var parameters = new List<object?>();
            if (!reader.IsEmptyElement)
            {
                reader.Read();
                while (MoveToNextElementOrEnd(reader))
                {
                    switch (reader.LocalName)
                    {
                        case "methodName":
                            method = Text(reader.ReadElementContentAsString()).Trim();
                            break;
                        case "params":
                            ReadParams(reader, parameters, limits);
                            break;
                        default:
                            throw new RpcFormatException($"unexpected element <{reader.LocalName}> in methodCall");
                    }
                }
            }
            if (string.IsNullOrEmpty(method))
            {
                throw new RpcFormatException("methodCall has no methodName");
            }
            return new RpcRequest(method, parameters, RpcDialect.XmlRpc, default);
        }
        catch (XmlException e)
        {
            throw new RpcFormatException("malformed XML-RPC request: " + e.Message, e);
        }
        catch (DecoderFallbackException e)
        {
            throw new RpcFormatException("request is not valid UTF-8", e);
        }
    }

    /// <summary>Parses a methodResponse and returns the value of its single param.</summary>
    public static object? ReadResponse(ReadOnlyMemory<byte> body, RpcLimits limits)
    {
        try
        {
            using var reader = OpenUtf8(body.Span, Settings(limits));
            reader.MoveToContent();
            Expect(reader, "methodResponse");
            reader.Read();
            var values = new List<object?>();
            while (MoveToNextElementOrEnd(reader))
            {
                if (reader.LocalName == "params")
                {
                    ReadParams(reader, values, limits);
                }
                else if (reader.LocalName == "fault")
                {
                    reader.Read();
                    MoveToNextElementOrEnd(reader);
                    var fault = ReadValue(reader, 0, limits);
                    throw new RpcFormatException("XML-RPC fault: " + XType.ToDisplayString(fault));
                }
                else
                {
                    reader.Skip();
                }
            }
            return values.Count > 0 ? values[0] : null;
        }
        catch (XmlException e)
        {
            throw new RpcFormatException("malformed XML-RPC response: " + e.Message, e);
        }
        catch (DecoderFallbackException e)
        {
            throw new RpcFormatException("response is not valid UTF-8", e);
        }
    }

    /// <summary>Parses a bare <c>&lt;value&gt;</c> fragment, as task results carry them.</summary>
    public static object? ReadValueFragment(string fragment, RpcLimits limits)
    {
        try
        {
            using var reader = XmlReader.Create(new StringReader(fragment), Settings(limits));
            reader.MoveToContent();
            return ReadValue(reader, 0, limits);
        }
        catch (XmlException e)
        {
            throw new RpcFormatException("malformed XML-RPC value: " + e.Message, e);
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // XML-RPC bodies are UTF-8. Decoding them here, strictly, and reading text means XmlReader
    // never switches decoders on an encoding declaration: a damaged declaration (a byte-order
    // mark inside it) made that switch throw ArgumentOutOfRangeException from inside System.Xml.
    private static XmlReader OpenUtf8(ReadOnlySpan<byte> body, XmlReaderSettings settings)
    {
        if (body.StartsWith("\xEF\xBB\xBF"u8))
        {
            body = body[3..];
        }
        return XmlReader.Create(new StringReader(StrictUtf8.GetString(body)), settings);
    }

    // A UTF-8 byte below 0x20 is always that control character (multi-byte sequences use only
    // bytes from 0x80), so a raw one becomes the character reference XmlReader reads when it does
    // not check characters; so do U+FFFE and U+FFFF (EF BF BE, EF BF BF), which it refuses raw.
    private static readonly SearchValues<byte> RawSuspects = SearchValues.Create(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 0xEF]);

    private static ReadOnlyMemory<byte> ControlsAsReferences(ReadOnlyMemory<byte> body)
    {
        var all = body.Span;
        ArrayBufferWriter<byte>? output = null;
        var copied = 0;
        var at = 0;
        int next;
        while ((next = all[at..].IndexOfAny(RawSuspects)) >= 0)
        {
            var i = at + next;
            int character;
            int length;
            if (all[i] != 0xEF)
            {
                (character, length) = (all[i], 1);
            }
            else if (i + 2 < all.Length && all[i + 1] == 0xBF && all[i + 2] is 0xBE or 0xBF)
            {
                (character, length) = (all[i + 2] == 0xBE ? 0xFFFE : 0xFFFF, 3);
            }
            else
            {
                at = i + 1;
                continue;
            }
            output ??= new ArrayBufferWriter<byte>(body.Length + 64);
            output.Write(all[copied..i]);
            var reference = output.GetSpan(8);
            "&#"u8.CopyTo(reference);
            Utf8Formatter.TryFormat(character, reference[2..], out var digits);
            reference[2 + digits] = (byte)';';
            output.Advance(3 + digits);
            copied = at = i + length;
        }
        if (output is null)
        {
            return body;
        }
        output.Write(all[copied..]);
        return output.WrittenMemory;
    }

    // With character checks off, a character reference can make a lone surrogate.
    private static string Text(string text) => XmlText.HasLoneSurrogate(text)
        ? throw new RpcFormatException("a string holds a lone surrogate, which is not text")
        : text;

    private static void ReadParams(XmlReader reader, List<object?> parameters, RpcLimits limits)
    {
        if (reader.IsEmptyElement)
        {
            reader.Read();
            return;
        }
        reader.Read();
        while (MoveToNextElementOrEnd(reader))
        {
            Expect(reader, "param");
            if (reader.IsEmptyElement)
            {
                throw new RpcFormatException("empty <param>");
            }
            reader.Read();
            if (!MoveToNextElementOrEnd(reader))
            {
                throw new RpcFormatException("<param> without <value>");
            }
            parameters.Add(ReadValue(reader, 0, limits));
            while (MoveToNextElementOrEnd(reader))
            {
                reader.Skip();
            }
            reader.Read(); // </param>
        }
        reader.Read(); // </params>
    }

    // Positions on the next element start, or returns false (consuming nothing) at an end tag.
    private static bool MoveToNextElementOrEnd(XmlReader reader)
    {
        while (true)
        {
            switch (reader.NodeType)
            {
                case XmlNodeType.Element:
                    return true;
                case XmlNodeType.EndElement:
                    return false;
                case XmlNodeType.None:
                    throw new RpcFormatException("unexpected end of document");
                case XmlNodeType.Text or XmlNodeType.CDATA:
                    if (!string.IsNullOrWhiteSpace(reader.Value))
                    {
                        throw new RpcFormatException("unexpected text");
                    }
                    reader.Read();
                    break;
                default:
                    reader.Read();
                    break;
            }
        }
    }

    private static void Expect(XmlReader reader, string name)
    {
        if (reader.NodeType != XmlNodeType.Element || reader.LocalName != name)
        {
            throw new RpcFormatException($"expected <{name}>, found <{reader.LocalName}>");
        }
    }

    // Reader is on <value>; leaves it after </value>.
    private static object? ReadValue(XmlReader reader, int depth, RpcLimits limits)
    {
        if (depth > limits.MaxDepth)
        {
            throw new RpcFormatException($"value nesting deeper than {limits.MaxDepth}");
        }
        Expect(reader, "value");
        if (reader.IsEmptyElement)
        {
            reader.Read();
            return "";
        }
        reader.Read();
        StringBuilder? text = null;
        object? typed = null;
        var sawElement = false;
        while (reader.NodeType != XmlNodeType.EndElement)
        {
            switch (reader.NodeType)
            {
                case XmlNodeType.Text or XmlNodeType.CDATA or XmlNodeType.Whitespace or XmlNodeType.SignificantWhitespace:
                    (text ??= new StringBuilder()).Append(reader.Value);
                    reader.Read();
                    break;
                case XmlNodeType.Element:
                    if (sawElement)
                    {
                        throw new RpcFormatException("<value> with more than one child element");
                    }
                    sawElement = true;
                    typed = ReadTyped(reader, depth, limits);
                    break;
                case XmlNodeType.None:
                    throw new RpcFormatException("unexpected end of document");
                default:
                    reader.Read();
                    break;
            }
        }
        reader.Read(); // </value>
        if (sawElement)
        {
            if (text is not null && !string.IsNullOrWhiteSpace(text.ToString()))
            {
                throw new RpcFormatException("<value> mixes text and a typed element");
            }
            return typed;
        }
        return text is null ? "" : Text(text.ToString());
    }

    private static object? ReadTyped(XmlReader reader, int depth, RpcLimits limits)
    {
        var name = reader.LocalName;
        switch (name)
        {
            case "string":
                return Text(reader.ReadElementContentAsString());
            case "int" or "i4" or "i8":
                var intText = reader.ReadElementContentAsString().Trim();
                return long.TryParse(intText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)
                    ? l
                    : throw new RpcFormatException($"bad <{name}> value");
            case "boolean":
                return reader.ReadElementContentAsString().Trim() switch
                {
                    "1" or "true" => true,
                    "0" or "false" => false,
                    _ => throw new RpcFormatException("bad <boolean> value"),
                };
            case "double":
                var doubleText = reader.ReadElementContentAsString().Trim();
                return double.TryParse(doubleText, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d
                    : TryParseOcamlInfinity(doubleText, out d) ? d
                    : throw new RpcFormatException("bad <double> value");
            case "dateTime.iso8601":
                var dateText = reader.ReadElementContentAsString().Trim();
                return DateTimeFormat.TryParse(dateText, out var dt) ? dt : throw new RpcFormatException("bad <dateTime.iso8601> value");
            case "base64":
                try
                {
                    return Convert.FromBase64String(reader.ReadElementContentAsString().Trim());
                }
                catch (FormatException e)
                {
                    throw new RpcFormatException("bad <base64> value", e);
                }
            case "nil":
                reader.Skip();
                return null;
            case "array":
                return ReadArray(reader, depth, limits);
            case "struct":
                return ReadStruct(reader, depth, limits);
            default:
                throw new RpcFormatException($"unknown value type <{name}>");
        }
    }

    private static List<object?> ReadArray(XmlReader reader, int depth, RpcLimits limits)
    {
        var items = new List<object?>();
        if (reader.IsEmptyElement)
        {
            reader.Read();
            return items;
        }
        reader.Read();
        while (MoveToNextElementOrEnd(reader))
        {
            Expect(reader, "data");
            if (reader.IsEmptyElement)
            {
                reader.Read();
                continue;
            }
            reader.Read();
            while (MoveToNextElementOrEnd(reader))
            {
                items.Add(ReadValue(reader, depth + 1, limits));
            }
            reader.Read(); // </data>
        }
        reader.Read(); // </array>
        return items;
    }

    private static Dictionary<string, object?> ReadStruct(XmlReader reader, int depth, RpcLimits limits)
    {
        var members = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (reader.IsEmptyElement)
        {
            reader.Read();
            return members;
        }
        reader.Read();
        while (MoveToNextElementOrEnd(reader))
        {
            Expect(reader, "member");
            reader.Read();
            string? name = null;
            object? value = null;
            var hasValue = false;
            while (MoveToNextElementOrEnd(reader))
            {
                if (reader.LocalName == "name")
                {
                    name = Text(reader.ReadElementContentAsString());
                }
                else if (reader.LocalName == "value")
                {
                    value = ReadValue(reader, depth + 1, limits);
                    hasValue = true;
                }
                else
                {
                    throw new RpcFormatException($"unexpected <{reader.LocalName}> in <member>");
                }
            }
            reader.Read(); // </member>
            if (name is null || !hasValue)
            {
                throw new RpcFormatException("<member> needs a <name> and a <value>");
            }
            members[name] = value;
        }
        reader.Read(); // </struct>
        return members;
    }

    // OCaml clients (and the real server) write infinities as %g does: inf, -inf.
    private static bool TryParseOcamlInfinity(string text, out double value)
    {
        var sign = text.StartsWith('-') ? -1 : 1;
        var magnitude = text.TrimStart('-', '+');
        value = sign * double.PositiveInfinity;
        return magnitude.Equals("inf", StringComparison.OrdinalIgnoreCase) && text.Length - magnitude.Length <= 1;
    }
}

/// <summary>A read-only stream over memory, so request bodies are parsed without a copy.</summary>
internal sealed class ReadOnlyMemoryStream(ReadOnlyMemory<byte> memory) : Stream
{
    private int _position;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => memory.Length;

    public override long Position
    {
        get => _position;
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var n = Math.Min(buffer.Length, memory.Length - _position);
        memory.Span.Slice(_position, n).CopyTo(buffer);
        _position += n;
        return n;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
