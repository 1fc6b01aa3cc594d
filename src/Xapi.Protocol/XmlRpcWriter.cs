using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>
/// Writes XML-RPC exactly as XenAPI servers do: compact (no whitespace between tags),
/// strings and 64-bit ints untyped, <c>Status</c>/<c>Value</c>/<c>ErrorDescription</c> envelopes.
/// </summary>
public static class XmlRpcWriter
{
    internal static ReadOnlySpan<byte> ResponseStart => "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"u8;

    internal static ReadOnlySpan<byte> ResponseEnd => "</struct></value></param></params></methodResponse>"u8;

    public static void WriteSuccess(IBufferWriter<byte> output, object? value)
    {
        output.Write(ResponseStart);
        output.Write("<member><name>Status</name><value>Success</value></member><member><name>Value</name>"u8);
        WriteValue(output, value);
        output.Write("</member>"u8);
        output.Write(ResponseEnd);
    }

    /// <summary>A reply without the <c>Status</c>/<c>Value</c> envelope, as plain XML-RPC servers answer.</summary>
    public static void WriteBareResult(IBufferWriter<byte> output, object? value)
    {
        output.Write("<?xml version=\"1.0\"?><methodResponse><params><param>"u8);
        WriteValue(output, value);
        output.Write("</param></params></methodResponse>"u8);
    }

    public static void WriteFailure(IBufferWriter<byte> output, IEnumerable<string> description)
    {
        output.Write(ResponseStart);
        output.Write("<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>"u8);
        foreach (var item in description)
        {
            output.Write("<value>"u8);
            WriteEscaped(output, item);
            output.Write("</value>"u8);
        }
        output.Write("</data></array></value></member>"u8);
        output.Write(ResponseEnd);
    }

    public static void WriteCall(IBufferWriter<byte> output, string method, IEnumerable<object?> parameters)
    {
        output.Write("<?xml version=\"1.0\"?><methodCall><methodName>"u8);
        WriteEscaped(output, method);
        output.Write("</methodName><params>"u8);
        foreach (var p in parameters)
        {
            output.Write("<param>"u8);
            WriteValue(output, p);
            output.Write("</param>"u8);
        }
        output.Write("</params></methodCall>"u8);
    }

    /// <summary>A task result: the value as an XML-RPC <c>&lt;value&gt;</c> fragment string.</summary>
    public static string ValueFragment(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        WriteValue(buffer, value);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    public static void WriteValue(IBufferWriter<byte> output, object? value)
    {
        var sink = new Utf8Sink(output);
        WriteValue(ref sink, value);
        sink.Flush();
    }

    private static void WriteValue(ref Utf8Sink output, object? value)
    {
        switch (value)
        {
            case null:
                output.Write("<value></value>"u8);
                break;
            case string s:
                output.Write("<value>"u8);
                WriteEscaped(ref output, s);
                output.Write("</value>"u8);
                break;
            case long l:
                output.Write("<value>"u8);
                WriteFormatted(ref output, l);
                output.Write("</value>"u8);
                break;
            case int i:
                output.Write("<value><i4>"u8);
                WriteFormatted(ref output, i);
                output.Write("</i4></value>"u8);
                break;
            case bool b:
                output.Write(b ? "<value><boolean>1</boolean></value>"u8 : "<value><boolean>0</boolean></value>"u8);
                break;
            case double d:
                output.Write("<value><double>"u8);
                output.WriteUtf8(FormatDouble(d));
                output.Write("</double></value>"u8);
                break;
            case DateTime dt:
                output.Write("<value><dateTime.iso8601>"u8);
                DateTimeFormat.Write(dt, output.GetSpan(DateTimeFormat.Length));
                output.Advance(DateTimeFormat.Length);
                output.Write("</dateTime.iso8601></value>"u8);
                break;
            case byte[] bytes:
                output.Write("<value><base64>"u8);
                output.WriteUtf8(Convert.ToBase64String(bytes));
                output.Write("</base64></value>"u8);
                break;
            case RecordValue record:
                WriteRecord(ref output, record);
                break;
            case ValueMap map:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in map)
                {
                    WriteMember(ref output, k as string ?? XType.ToDisplayString(k), v);
                }
                output.Write("</struct></value>"u8);
                break;
            case object?[] array:
                // Sets are arrays: an exact type test spares the interface casts below.
                output.Write("<value><array><data>"u8);
                foreach (var item in array)
                {
                    WriteValue(ref output, item);
                }
                output.Write("</data></array></value>"u8);
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in dict)
                {
                    WriteMember(ref output, k, v);
                }
                output.Write("</struct></value>"u8);
                break;
            case IReadOnlyList<object?> list:
                output.Write("<value><array><data>"u8);
                for (var i = 0; i < list.Count; i++)
                {
                    WriteValue(ref output, list[i]);
                }
                output.Write("</data></array></value>"u8);
                break;
            case IEnumerable<string> strings:
                output.Write("<value><array><data>"u8);
                foreach (var s in strings)
                {
                    WriteValue(ref output, s);
                }
                output.Write("</data></array></value>"u8);
                break;
            default:
                throw new InvalidOperationException($"cannot encode a {value.GetType().Name} as XML-RPC");
        }
    }

    private static void WriteRecord(ref Utf8Sink output, RecordValue record)
    {
        var tags = RecordTags.For(record.Class).XmlMembers;
        var values = record.FieldValues;
        output.Write("<value><struct>"u8);
        for (var i = 0; i < values.Length; i++)
        {
            output.Write(tags[i]);
            WriteValue(ref output, values[i]);
        }
        output.Write(values.Length == 0 ? "</struct></value>"u8 : "</member></struct></value>"u8);
    }

    private static void WriteMember(ref Utf8Sink output, string name, object? value)
    {
        output.Write("<member><name>"u8);
        WriteEscaped(ref output, name);
        output.Write("</name>"u8);
        WriteValue(ref output, value);
        output.Write("</member>"u8);
    }

    // Like C's %.16g: 16 significant digits, shortest form.
    internal static string FormatDouble(double d)
    {
        if (double.IsNaN(d) || double.IsInfinity(d))
        {
            return d.ToString(CultureInfo.InvariantCulture).ToLowerInvariant();
        }
        return d.ToString("G16", CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);
    }

    private static void WriteFormatted(ref Utf8Sink output, long value)
    {
        Utf8Formatter.TryFormat(value, output.GetSpan(20), out var written);
        output.Advance(written);
    }

    private static readonly SearchValues<char> Escaped = SearchValues.Create("<>&\r");

    /// <summary>The element's text: what XenAPI escapes, escaped; everything else as UTF-8.</summary>
    internal static void WriteEscaped(ref Utf8Sink output, string text)
    {
        var rest = text.AsSpan();
        int next;
        // Most strings have nothing to escape; one vectorised search tells.
        while ((next = rest.IndexOfAny(Escaped)) >= 0)
        {
            output.WriteUtf8(rest[..next]);
            output.Write(rest[next] switch
            {
                '<' => "&lt;"u8,
                '>' => "&gt;"u8,
                '&' => "&amp;"u8,
                _ => "&#13;"u8,
            });
            rest = rest[(next + 1)..];
        }
        output.WriteUtf8(rest);
    }

    internal static void WriteEscaped(IBufferWriter<byte> output, string text)
    {
        var sink = new Utf8Sink(output);
        WriteEscaped(ref sink, text);
        sink.Flush();
    }
}
