using System.Buffers;
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

    /// <summary>Parses a JSON-RPC response; returns the result or throws the XenAPI error it carries.</summary>
    public static object? ReadResponse(ReadOnlyMemory<byte> body, RpcLimits limits)
    {
        var reader = new Utf8JsonReader(body.Span, new JsonReaderOptions { MaxDepth = limits.MaxDepth + 2 });
        reader.Read();
        var value = ReadValue(ref reader, 0, limits) as Dictionary<string, object?> ?? throw new RpcFormatException("response is not an object");
        if (value.TryGetValue("error", out var error) && error is not null)
        {
            switch (error)
            {
                case List<object?> v1:
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
