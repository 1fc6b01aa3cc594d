using System.Buffers;
using System.Buffers.Text;
using System.Text.Json;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>JSON-RPC v1 and v2 as XenAPI speaks them, on one endpoint.</summary>
public static class JsonRpc
{
    private static readonly JsonWriterOptions WriterOptions = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        SkipValidation = true,
    };

    public static RpcRequest ReadCall(ReadOnlyMemory<byte> body, RpcLimits limits)
    {
        var reader = new Utf8JsonReader(body.Span, new JsonReaderOptions { MaxDepth = limits.MaxDepth + 2, CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new RpcFormatException("JSON-RPC request must be an object");
            }
            string? method = null;
            List<object?>? parameters = null;
            ReadOnlyMemory<byte>? id = null;
            var v2 = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var property = reader.GetString();
                reader.Read();
                switch (property)
                {
                    case "method":
                        method = reader.TokenType == JsonTokenType.String ? reader.GetString() : throw new RpcFormatException("method must be a string");
                        break;
                    case "params":
                        parameters = ReadValue(ref reader, 0, limits) as List<object?> ?? throw new RpcFormatException("params must be an array");
                        break;
                    case "id":
                        var start = (int)reader.TokenStartIndex;
                        if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                        {
                            throw new RpcFormatException("id must be a string, number or null");
                        }
                        // ValueSpan excludes a string's quotes and keeps its escapes: echo the token verbatim.
                        var length = reader.TokenType == JsonTokenType.String ? reader.ValueSpan.Length + 2 : reader.ValueSpan.Length;
                        id = body.Slice(start, length);
                        break;
                    case "jsonrpc":
                        v2 = reader.TokenType == JsonTokenType.String && reader.GetString() == "2.0";
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }
            if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
            {
                // A second value, or a truncated object, is not one call.
                throw new RpcFormatException("JSON-RPC request is not one object");
            }
            if (method is null)
            {
                throw new RpcFormatException("JSON-RPC request has no method");
            }
            if (id is null)
            {
                throw new RpcFormatException("JSON-RPC request has no id");
            }
            return new RpcRequest(method, parameters ?? [], v2 ? RpcDialect.JsonRpcV2 : RpcDialect.JsonRpcV1, id.Value);
        }
        catch (JsonException e)
        {
            throw new RpcFormatException("malformed JSON-RPC request: " + e.Message, e);
        }
        catch (InvalidOperationException e)
        {
            throw new RpcFormatException("malformed JSON-RPC request: " + e.Message, e);
        }
    }

    private static object? ReadValue(ref Utf8JsonReader reader, int depth, RpcLimits limits)
    {
        if (depth > limits.MaxDepth)
        {
            throw new RpcFormatException($"value nesting deeper than {limits.MaxDepth}");
        }
        switch (reader.TokenType)
        {
            case JsonTokenType.String:
                return reader.GetString();
            case JsonTokenType.Number:
                // Boxed separately: "cond ? long : double" would turn every integer into a double.
                if (reader.TryGetInt64(out var l))
                {
                    return l;
                }
                return reader.GetDouble();
            case JsonTokenType.True:
                return true;
            case JsonTokenType.False:
                return false;
            case JsonTokenType.Null:
                return null;
            case JsonTokenType.StartArray:
                var list = new List<object?>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    list.Add(ReadValue(ref reader, depth + 1, limits));
                }
                return list;
            case JsonTokenType.StartObject:
                var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var name = reader.GetString()!;
                    reader.Read();
                    dict[name] = ReadValue(ref reader, depth + 1, limits);
                }
                return dict;
            default:
                throw new RpcFormatException($"unexpected JSON token {reader.TokenType}");
        }
    }

    public static void WriteSuccess(IBufferWriter<byte> output, RpcRequest request, object? value)
    {
        // Written by hand rather than through Utf8JsonWriter, for speed on large records; the
        // bytes are the ones Utf8JsonWriter wrote with WriterOptions, which is still what
        // decides every string it would escape (see WriteString).
        var sink = new Utf8Sink(output);
        if (request.Dialect == RpcDialect.JsonRpcV2)
        {
            sink.Write("{\"jsonrpc\":\"2.0\",\"result\":"u8);
            WriteValue(ref sink, value, 1);
            sink.Write(",\"id\":"u8);
        }
        else
        {
            sink.Write("{\"result\":"u8);
            WriteValue(ref sink, value, 1);
            sink.Write(",\"error\":null,\"id\":"u8);
        }
        sink.Write(request.JsonId.Span);
        sink.Write((byte)'}');
        sink.Flush();
    }

    public static void WriteFailure(IBufferWriter<byte> output, RpcRequest request, XenApiException error)
    {
        using var writer = new Utf8JsonWriter(output, WriterOptions);
        writer.WriteStartObject();
        if (request.Dialect == RpcDialect.JsonRpcV2)
        {
            writer.WriteString("jsonrpc"u8, "2.0"u8);
            writer.WriteStartObject("error"u8);
            writer.WriteNumber("code"u8, 1);
            writer.WriteString("message"u8, error.Code);
            writer.WriteStartArray("data"u8);
            foreach (var p in error.Parameters)
            {
                writer.WriteStringValue(p);
            }
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        else
        {
            writer.WriteNull("result"u8);
            writer.WriteStartArray("error"u8);
            foreach (var item in error.Description)
            {
                writer.WriteStringValue(item);
            }
            writer.WriteEndArray();
        }
        writer.WritePropertyName("id"u8);
        writer.WriteRawValue(request.JsonId.Span, skipInputValidation: true);
        writer.WriteEndObject();
    }

    public static void WriteCall(IBufferWriter<byte> output, string method, IEnumerable<object?> parameters, long id, bool v2 = true)
    {
        using var writer = new Utf8JsonWriter(output, WriterOptions);
        writer.WriteStartObject();
        if (v2)
        {
            writer.WriteString("jsonrpc"u8, "2.0"u8);
        }
        writer.WriteString("method"u8, method);
        writer.WriteStartArray("params"u8);
        foreach (var p in parameters)
        {
            WriteValue(writer, p);
        }
        writer.WriteEndArray();
        writer.WriteNumber("id"u8, id);
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
                    writer.WriteStringValue(XmlRpcWriter.FormatDouble(d));
                }
                break;
            case DateTime dt:
                writer.WriteStringValue(DateTimeFormat.Format(dt));
                break;
            case byte[] bytes:
                writer.WriteBase64StringValue(bytes);
                break;
            case RecordValue record:
                writer.WriteStartObject();
                var fields = record.Class.Fields;
                for (var i = 0; i < fields.Count; i++)
                {
                    writer.WritePropertyName(fields[i].Name);
                    WriteValue(writer, record.FieldValues[i]);
                }
                writer.WriteEndObject();
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

    // Utf8JsonWriter refuses to nest deeper than its MaxDepth, counting the envelope (hence
    // depth 1 for the result); so does the hand-written writer.
    private static readonly int MaxDepth = new JsonWriterOptions().MaxDepth is var d && d > 0 ? d : 1000;

    /// <summary>One value at <paramref name="depth"/> of a reply (the result is at depth 1).</summary>
    internal static void WriteValue(IBufferWriter<byte> output, object? value, int depth)
    {
        var sink = new Utf8Sink(output);
        WriteValue(ref sink, value, depth);
        sink.Flush();
    }

    internal static void WriteString(IBufferWriter<byte> output, string text)
    {
        var sink = new Utf8Sink(output);
        WriteString(ref sink, text);
        sink.Flush();
    }

    private static void WriteValue(ref Utf8Sink output, object? value, int depth)
    {
        switch (value)
        {
            case null:
                output.Write("null"u8);
                break;
            case string s:
                WriteString(ref output, s);
                break;
            case long l:
                Utf8Formatter.TryFormat(l, output.GetSpan(20), out var written);
                output.Advance(written);
                break;
            case int i:
                Utf8Formatter.TryFormat(i, output.GetSpan(11), out written);
                output.Advance(written);
                break;
            case bool b:
                output.Write(b ? "true"u8 : "false"u8);
                break;
            case double d:
                if (double.IsFinite(d))
                {
                    WriteDouble(ref output, d, value);
                }
                else
                {
                    WriteString(ref output, XmlRpcWriter.FormatDouble(d));
                }
                break;
            case DateTime dt:
                var span = output.GetSpan(DateTimeFormat.Length + 2);
                span[0] = (byte)'"';
                DateTimeFormat.Write(dt, span[1..]);
                span[DateTimeFormat.Length + 1] = (byte)'"';
                output.Advance(DateTimeFormat.Length + 2);
                break;
            case byte[] bytes:
                WriteThroughJsonWriter(ref output, bytes);
                break;
            case RecordValue record:
            {
                CheckDepth(depth);
                var names = RecordTags.For(record.Class).JsonNames;
                var values = record.FieldValues;
                output.Write((byte)'{');
                for (var i = 0; i < values.Length; i++)
                {
                    output.Write(names[i]);
                    WriteValue(ref output, values[i], depth + 1);
                }
                output.Write((byte)'}');
                break;
            }
            case ValueMap map:
            {
                CheckDepth(depth);
                output.Write((byte)'{');
                var first = true;
                foreach (var (k, v) in map)
                {
                    WritePropertyName(ref output, k as string ?? XType.ToDisplayString(k), ref first);
                    WriteValue(ref output, v, depth + 1);
                }
                output.Write((byte)'}');
                break;
            }
            case object?[] array:
                // Sets are arrays: an exact type test spares the interface casts below.
                CheckDepth(depth);
                output.Write((byte)'[');
                for (var i = 0; i < array.Length; i++)
                {
                    if (i > 0)
                    {
                        output.Write((byte)',');
                    }
                    WriteValue(ref output, array[i], depth + 1);
                }
                output.Write((byte)']');
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
            {
                CheckDepth(depth);
                output.Write((byte)'{');
                var first = true;
                foreach (var (k, v) in dict)
                {
                    WritePropertyName(ref output, k, ref first);
                    WriteValue(ref output, v, depth + 1);
                }
                output.Write((byte)'}');
                break;
            }
            case IReadOnlyList<object?> list:
                CheckDepth(depth);
                output.Write((byte)'[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                    {
                        output.Write((byte)',');
                    }
                    WriteValue(ref output, list[i], depth + 1);
                }
                output.Write((byte)']');
                break;
            case IEnumerable<string> strings:
            {
                CheckDepth(depth);
                output.Write((byte)'[');
                var first = true;
                foreach (var s in strings)
                {
                    if (!first)
                    {
                        output.Write((byte)',');
                    }
                    first = false;
                    WriteString(ref output, s);
                }
                output.Write((byte)']');
                break;
            }
            default:
                throw new InvalidOperationException($"cannot encode a {value.GetType().Name} as JSON");
        }
    }

    private static void CheckDepth(int depth)
    {
        if (depth >= MaxDepth)
        {
            throw new InvalidOperationException($"cannot encode JSON nested deeper than {MaxDepth}");
        }
    }

    private static void WritePropertyName(ref Utf8Sink output, string name, ref bool first)
    {
        if (!first)
        {
            output.Write((byte)',');
        }
        first = false;
        WriteString(ref output, name);
        output.Write((byte)':');
    }

    /// <summary>A JSON string (or <c>null</c>) exactly as Utf8JsonWriter with <see cref="WriterOptions"/> writes it.</summary>
    internal static void WriteString(ref Utf8Sink output, string? text)
    {
        if (text is null)
        {
            output.Write("null"u8);
            return;
        }
        if (text.AsSpan().ContainsAnyExcept(Plain.Ascii))
        {
            WriteThroughJsonWriter(ref output, text);
            return;
        }
        var span = output.GetSpan(text.Length + 2);
        span[0] = (byte)'"';
        System.Text.Ascii.FromUtf16(text, span[1..], out var written);
        span[written + 1] = (byte)'"';
        output.Advance(written + 2);
    }

    // Rare values (strings with anything to escape or beyond ASCII, doubles, base64) go through a
    // real Utf8JsonWriter, so their bytes cannot drift from what it writes.
    [ThreadStatic]
    private static (ArrayBufferWriter<byte> Buffer, Utf8JsonWriter Writer)? t_scalarWriter;

    private static void WriteThroughJsonWriter(ref Utf8Sink output, object value) => output.Write(EncodeWithJsonWriter(value));

    // Valid until the next call on this thread.
    private static ReadOnlySpan<byte> EncodeWithJsonWriter(object value)
    {
        var (buffer, writer) = t_scalarWriter ??= NewScalarWriter();
        buffer.ResetWrittenCount();
        writer.Reset(buffer);
        switch (value)
        {
            case string s:
                writer.WriteStringValue(s);
                break;
            case double d:
                writer.WriteNumberValue(d);
                break;
            default:
                writer.WriteBase64StringValue((byte[])value);
                break;
        }
        writer.Flush();
        if (buffer.Capacity > 64 * 1024)
        {
            // Let a one-off huge value go rather than keep its buffer for the thread's life.
            t_scalarWriter = null;
        }
        return buffer.WrittenSpan;
    }

    // Records repeat the same few doubles (1.0, 0.0) row after row.
    [ThreadStatic]
    private static (long Bits, byte[] Json)? t_lastDouble;

    private static void WriteDouble(ref Utf8Sink output, double value, object boxed)
    {
        var bits = BitConverter.DoubleToInt64Bits(value);
        if (t_lastDouble is not { } last || last.Bits != bits)
        {
            last = (bits, EncodeWithJsonWriter(boxed).ToArray());
            t_lastDouble = last;
        }
        output.Write(last.Json);
    }

    private static (ArrayBufferWriter<byte>, Utf8JsonWriter) NewScalarWriter()
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        return (buffer, new Utf8JsonWriter(buffer, WriterOptions));
    }

    // A nested class so that WriterOptions is set before this is worked out from it.
    private static class Plain
    {
        /// <summary>
        /// The ASCII characters Utf8JsonWriter copies unescaped with <see cref="WriterOptions"/>,
        /// learnt from the writer itself so the fast path cannot disagree with it.
        /// </summary>
        public static readonly SearchValues<char> Ascii = Find();

        private static SearchValues<char> Find()
        {
            var plain = new List<char>();
            var buffer = new ArrayBufferWriter<byte>();
            using var writer = new Utf8JsonWriter(buffer, WriterOptions);
            for (var c = '\0'; c < 128; c++)
            {
                buffer.ResetWrittenCount();
                writer.Reset(buffer);
                writer.WriteStringValue(c.ToString());
                writer.Flush();
                var bytes = buffer.WrittenSpan;
                if (bytes.Length == 3 && bytes[1] == c)
                {
                    plain.Add(c);
                }
            }
            return SearchValues.Create(plain.ToArray());
        }
    }

    /// <summary>Parses a JSON-RPC response; returns the result or throws the XenAPI error it carries.</summary>
    public static object? ReadResponse(ReadOnlyMemory<byte> body, RpcLimits limits)
    {
        Dictionary<string, object?> value;
        try
        {
            var reader = new Utf8JsonReader(body.Span, new JsonReaderOptions { MaxDepth = limits.MaxDepth + 2 });
            reader.Read();
            value = ReadValue(ref reader, 0, limits) as Dictionary<string, object?> ?? throw new RpcFormatException("response is not an object");
            if (reader.Read())
            {
                throw new RpcFormatException("text after the JSON-RPC response");
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new RpcFormatException("malformed JSON-RPC response: " + e.Message, e);
        }
        if (value.TryGetValue("error", out var error) && error is not null)
        {
            switch (error)
            {
                case List<object?> { Count: > 0 } v1:
                    var items = v1.Select(x => XType.ToDisplayString(x)).ToArray();
                    throw new XenApiException(items[0], items[1..]);
                case Dictionary<string, object?> v2:
                    var data = v2.GetValueOrDefault("data") as List<object?> ?? [];
                    throw new XenApiException(v2.GetValueOrDefault("message") as string ?? "UNKNOWN",
                        data.Select(x => XType.ToDisplayString(x)).ToArray());
                default:
                    throw new RpcFormatException("malformed error in JSON-RPC response");
            }
        }
        return value.GetValueOrDefault("result");
    }
}
