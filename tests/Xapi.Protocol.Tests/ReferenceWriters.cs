using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Xapi.Model;

namespace Xapi.Protocol.Tests;

// The writers as they were before records were encoded by hand (commit 4b5075b), kept as the
// reference the wire format is compared against: the output must not change by a byte.
// Records are given to them as the field-name dictionaries they were then.
internal static class ReferenceXmlRpc
{
    private static ReadOnlySpan<byte> ResponseStart => "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"u8;

    private static ReadOnlySpan<byte> ResponseEnd => "</struct></value></param></params></methodResponse>"u8;

    public static void WriteSuccess(IBufferWriter<byte> output, object? value)
    {
        output.Write(ResponseStart);
        output.Write("<member><name>Status</name><value>Success</value></member><member><name>Value</name>"u8);
        WriteValue(output, value);
        output.Write("</member>"u8);
        output.Write(ResponseEnd);
    }

    public static string FormatDoubleForJson(double d) => FormatDouble(d);

    public static void WriteValue(IBufferWriter<byte> output, object? value)
    {
        switch (value)
        {
            case null:
                output.Write("<value></value>"u8);
                break;
            case string s:
                output.Write("<value>"u8);
                WriteEscaped(output, s);
                output.Write("</value>"u8);
                break;
            case long l:
                output.Write("<value>"u8);
                WriteFormatted(output, l);
                output.Write("</value>"u8);
                break;
            case int i:
                output.Write("<value><i4>"u8);
                WriteFormatted(output, i);
                output.Write("</i4></value>"u8);
                break;
            case bool b:
                output.Write(b ? "<value><boolean>1</boolean></value>"u8 : "<value><boolean>0</boolean></value>"u8);
                break;
            case double d:
                output.Write("<value><double>"u8);
                WriteAscii(output, FormatDouble(d));
                output.Write("</double></value>"u8);
                break;
            case DateTime dt:
                output.Write("<value><dateTime.iso8601>"u8);
                WriteAscii(output, DateTimeFormat.Format(dt));
                output.Write("</dateTime.iso8601></value>"u8);
                break;
            case byte[] bytes:
                output.Write("<value><base64>"u8);
                WriteAscii(output, Convert.ToBase64String(bytes));
                output.Write("</base64></value>"u8);
                break;
            case ValueMap map:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in map)
                {
                    WriteMember(output, XType.ToDisplayString(k), v);
                }
                output.Write("</struct></value>"u8);
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in dict)
                {
                    WriteMember(output, k, v);
                }
                output.Write("</struct></value>"u8);
                break;
            case IReadOnlyList<object?> list:
                output.Write("<value><array><data>"u8);
                for (var i = 0; i < list.Count; i++)
                {
                    WriteValue(output, list[i]);
                }
                output.Write("</data></array></value>"u8);
                break;
            case IEnumerable<string> strings:
                output.Write("<value><array><data>"u8);
                foreach (var s in strings)
                {
                    WriteValue(output, s);
                }
                output.Write("</data></array></value>"u8);
                break;
            default:
                throw new InvalidOperationException($"cannot encode a {value.GetType().Name} as XML-RPC");
        }
    }

    private static void WriteMember(IBufferWriter<byte> output, string name, object? value)
    {
        output.Write("<member><name>"u8);
        WriteEscaped(output, name);
        output.Write("</name>"u8);
        WriteValue(output, value);
        output.Write("</member>"u8);
    }

    // Like C's %.16g: 16 significant digits, shortest form.
    private static string FormatDouble(double d)
    {
        if (double.IsNaN(d) || double.IsInfinity(d))
        {
            return d.ToString(CultureInfo.InvariantCulture).ToLowerInvariant();
        }
        return d.ToString("G16", CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);
    }

    private static void WriteFormatted(IBufferWriter<byte> output, long value)
    {
        var span = output.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out var written);
        output.Advance(written);
    }

    private static void WriteAscii(IBufferWriter<byte> output, string text)
    {
        var span = output.GetSpan(text.Length);
        var n = Encoding.ASCII.GetBytes(text, span);
        output.Advance(n);
    }

    private static void WriteEscaped(IBufferWriter<byte> output, string text)
    {
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            var replacement = text[i] switch
            {
                '<' => "&lt;",
                '>' => "&gt;",
                '&' => "&amp;",
                '\r' => "&#13;",
                // The one deliberate change since (issue 8): what XML 1.0 cannot carry is U+FFFD.
                (>= '\0' and < ' ' and not '\t' and not '\n') or '\uFFFE' or '\uFFFF' => "\uFFFD",
                _ => null,
            };
            if (replacement is null)
            {
                continue;
            }
            WriteUtf8(output, text.AsSpan(start, i - start));
            WriteUtf8(output, replacement);
            start = i + 1;
        }
        WriteUtf8(output, text.AsSpan(start));
    }

    private static void WriteUtf8(IBufferWriter<byte> output, ReadOnlySpan<char> text)
    {
        if (text.IsEmpty)
        {
            return;
        }
        var span = output.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        var n = Encoding.UTF8.GetBytes(text, span);
        output.Advance(n);
    }
}

internal static class ReferenceJsonRpc
{
    private static readonly JsonWriterOptions WriterOptions = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        SkipValidation = true,
    };

    public static void WriteSuccess(IBufferWriter<byte> output, RpcRequest request, object? value)
    {
        using var writer = new Utf8JsonWriter(output, WriterOptions);
        writer.WriteStartObject();
        if (request.Dialect == RpcDialect.JsonRpcV2)
        {
            writer.WriteString("jsonrpc"u8, "2.0"u8);
            writer.WritePropertyName("result"u8);
            WriteValue(writer, value);
        }
        else
        {
            writer.WritePropertyName("result"u8);
            WriteValue(writer, value);
            writer.WriteNull("error"u8);
        }
        writer.WritePropertyName("id"u8);
        writer.WriteRawValue(request.JsonId.Span, skipInputValidation: true);
        writer.WriteEndObject();
    }

    public static void WriteValue(Utf8JsonWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNullValue();
                break;
            case string s:
                writer.WriteStringValue(s);
                break;
            case long l:
                writer.WriteNumberValue(l);
                break;
            case int i:
                writer.WriteNumberValue(i);
                break;
            case bool b:
                writer.WriteBooleanValue(b);
                break;
            case double d:
                if (double.IsFinite(d))
                {
                    writer.WriteNumberValue(d);
                }
                else
                {
                    writer.WriteStringValue(ReferenceXmlRpc.FormatDoubleForJson(d));
                }
                break;
            case DateTime dt:
                writer.WriteStringValue(DateTimeFormat.Format(dt));
                break;
            case byte[] bytes:
                writer.WriteBase64StringValue(bytes);
                break;
            case ValueMap map:
                writer.WriteStartObject();
                foreach (var (k, v) in map)
                {
                    writer.WritePropertyName(XType.ToDisplayString(k));
                    WriteValue(writer, v);
                }
                writer.WriteEndObject();
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                writer.WriteStartObject();
                foreach (var (k, v) in dict)
                {
                    writer.WritePropertyName(k);
                    WriteValue(writer, v);
                }
                writer.WriteEndObject();
                break;
            case IReadOnlyList<object?> list:
                writer.WriteStartArray();
                for (var i = 0; i < list.Count; i++)
                {
                    WriteValue(writer, list[i]);
                }
                writer.WriteEndArray();
                break;
            case IEnumerable<string> strings:
                writer.WriteStartArray();
                foreach (var s in strings)
                {
                    writer.WriteStringValue(s);
                }
                writer.WriteEndArray();
                break;
            default:
                throw new InvalidOperationException($"cannot encode a {value.GetType().Name} as JSON");
        }
    }
}
