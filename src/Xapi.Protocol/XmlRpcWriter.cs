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
/// <remarks>
/// A reply is always well-formed XML 1.0, whatever its strings hold: characters XML 1.0 cannot
/// carry (C0 controls other than tab, LF and CR; U+FFFE; U+FFFF; lone surrogates) are written
/// as U+FFFD, so strict parsers such as expat (Python's xmlrpc.client) accept every reply. The
/// API refuses such strings (see <see cref="XmlText"/>); this guards the ones that arrive any
/// other way, such as a restored database. A call instead writes them as character references,
/// as clients that send them raw do in effect, so the server sees the real value and refuses it
/// rather than storing a silently altered one.
/// </remarks>
public static class XmlRpcWriter
{
    internal static ReadOnlySpan<byte> ResponseStart => "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"u8;

    internal static ReadOnlySpan<byte> ResponseEnd => "</struct></value></param></params></methodResponse>"u8;

    public static void WriteSuccess(IBufferWriter<byte> output, object? value)
    {
        output.Write(ResponseStart);
        output.Write("<member><name>Status</name><value>Success</value></member><member><name>Value</name>"u8);
        WriteValue(output, value, call: false);
        output.Write("</member>"u8);
        output.Write(ResponseEnd);
    }

    /// <summary>A reply without the <c>Status</c>/<c>Value</c> envelope, as plain XML-RPC servers answer.</summary>
    public static void WriteBareResult(IBufferWriter<byte> output, object? value)
    {
        output.Write("<?xml version=\"1.0\"?><methodResponse><params><param>"u8);
        WriteValue(output, value, call: false);
        output.Write("</param></params></methodResponse>"u8);
    }

    public static void WriteFailure(IBufferWriter<byte> output, IEnumerable<string> description)
    {
        output.Write(ResponseStart);
        output.Write("<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>"u8);
        foreach (var item in description)
        {
            output.Write("<value>"u8);
            WriteEscaped(output, item, call: false);
            output.Write("</value>"u8);
        }
        output.Write("</data></array></value></member>"u8);
        output.Write(ResponseEnd);
    }

    public static void WriteCall(IBufferWriter<byte> output, string method, IEnumerable<object?> parameters)
    {
        output.Write("<?xml version=\"1.0\"?><methodCall><methodName>"u8);
        WriteEscaped(output, method, call: true);
        output.Write("</methodName><params>"u8);
        foreach (var p in parameters)
        {
            output.Write("<param>"u8);
            WriteValue(output, p, call: true);
            output.Write("</param>"u8);
        }
        output.Write("</params></methodCall>"u8);
    }

    /// <summary>A task result: the value as an XML-RPC <c>&lt;value&gt;</c> fragment string.</summary>
    public static string ValueFragment(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        WriteValue(buffer, value, call: false);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>A <c>&lt;value&gt;</c> as a reply carries it.</summary>
    public static void WriteValue(IBufferWriter<byte> output, object? value) => WriteValue(output, value, call: false);

    private static void WriteValue(IBufferWriter<byte> output, object? value, bool call)
    {
        var sink = new Utf8Sink(output);
        WriteValue(ref sink, value, call);
        sink.Flush();
    }

    private static void WriteValue(ref Utf8Sink output, object? value, bool call)
    {
        switch (value)
        {
            case null:
                output.Write("<value></value>"u8);
                break;
            case string s:
                output.Write("<value>"u8);
                WriteEscaped(ref output, s, call);
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
                WriteRecord(ref output, record, call);
                break;
            case ValueMap map:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in map)
                {
                    WriteMember(ref output, k as string ?? XType.ToDisplayString(k), v, call);
                }
                output.Write("</struct></value>"u8);
                break;
            case object?[] array:
                // Sets are arrays: an exact type test spares the interface casts below.
                output.Write("<value><array><data>"u8);
                foreach (var item in array)
                {
                    WriteValue(ref output, item, call);
                }
                output.Write("</data></array></value>"u8);
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in dict)
                {
                    WriteMember(ref output, k, v, call);
                }
                output.Write("</struct></value>"u8);
                break;
            case IReadOnlyList<object?> list:
                output.Write("<value><array><data>"u8);
                for (var i = 0; i < list.Count; i++)
                {
                    WriteValue(ref output, list[i], call);
                }
                output.Write("</data></array></value>"u8);
                break;
            case IEnumerable<string> strings:
                output.Write("<value><array><data>"u8);
                foreach (var s in strings)
                {
                    WriteValue(ref output, s, call);
                }
                output.Write("</data></array></value>"u8);
                break;
            default:
                throw new InvalidOperationException($"cannot encode a {value.GetType().Name} as XML-RPC");
        }
    }

    private static void WriteRecord(ref Utf8Sink output, RecordValue record, bool call)
    {
        var tags = RecordTags.For(record.Class).XmlMembers;
        var values = record.FieldValues;
        output.Write("<value><struct>"u8);
        for (var i = 0; i < values.Length; i++)
        {
            output.Write(tags[i]);
            WriteValue(ref output, values[i], call);
        }
        output.Write(values.Length == 0 ? "</struct></value>"u8 : "</member></struct></value>"u8);
    }

    private static void WriteMember(ref Utf8Sink output, string name, object? value, bool call)
    {
        output.Write("<member><name>"u8);
        WriteEscaped(ref output, name, call);
        output.Write("</name>"u8);
        WriteValue(ref output, value, call);
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

    // What XenAPI escapes, and what XML 1.0 cannot carry at all (XmlText.IsUnrepresentable).
    private static readonly SearchValues<char> Escaped = SearchValues.Create(
        "<>&\r\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\u000B\u000C\u000E\u000F"
        + "\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F\uFFFE\uFFFF");

    /// <summary>
    /// The element's text: what XenAPI escapes, escaped; characters XML cannot carry as U+FFFD
    /// in a reply and as character references in a call; everything else as UTF-8 (where a lone
    /// surrogate becomes U+FFFD).
    /// </summary>
    internal static void WriteEscaped(ref Utf8Sink output, string text, bool call = false)
    {
        var rest = text.AsSpan();
        int next;
        // Most strings have nothing to escape; one vectorised search tells.
        while ((next = rest.IndexOfAny(Escaped)) >= 0)
        {
            output.WriteUtf8(rest[..next]);
            var c = rest[next];
            switch (c)
            {
                case '<':
                    output.Write("&lt;"u8);
                    break;
                case '>':
                    output.Write("&gt;"u8);
                    break;
                case '&':
                    output.Write("&amp;"u8);
                    break;
                case '\r':
                    output.Write("&#13;"u8);
                    break;
                default:
                    if (call)
                    {
                        output.Write("&#"u8);
                        WriteFormatted(ref output, c);
                        output.Write((byte)';');
                    }
                    else
                    {
                        output.Write("\uFFFD"u8);
                    }
                    break;
            }
            rest = rest[(next + 1)..];
        }
        output.WriteUtf8(rest);
    }

    internal static void WriteEscaped(IBufferWriter<byte> output, string text, bool call = false)
    {
        var sink = new Utf8Sink(output);
        WriteEscaped(ref sink, text, call);
        sink.Flush();
    }
}
