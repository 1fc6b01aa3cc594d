using System.Buffers;
using System.Globalization;
using System.Text;
using System.Xml;
using Xapi.Model;
using Xapi.Tests.Fuzzing;

namespace Xapi.Protocol.Tests;

/// <summary>
/// The request decoders against generated and damaged input (deep nesting, truncation, huge
/// counts, bad UTF-8, bad numbers, odd types). A call either decodes, and then re-encodes as
/// well-formed XML-RPC and JSON-RPC, or is refused with <see cref="RpcFormatException"/> (the
/// HTTP error); a response decodes or is refused with that or the <see cref="XenApiException"/>
/// it carries. Nothing else may escape.
/// </summary>
[Category("Fuzz")]
[Category("Slow")]
[Explicit("35 s per decoder: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class DecoderFuzzTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(35);

    private static readonly RpcLimits Limits = RpcLimits.Default;

    private static readonly string[] Methods = ["VM.get_all_records", "session.login_with_password", "system.isAlive", "event.from", "Async.VM.start", "x", ""];

    [Test]
    public void The_xml_rpc_decoder_returns_or_refuses_every_input()
    {
        byte[][] tokens = [.. new[] { "<value>", "</value>", "<value><array><data>", "<value><struct><member><name>a</name>", "</data></array></value>", "<nil/>", "<![CDATA[", "]]>", "<!--", "&#0;", "&#xD800;", "&amp;", "<!DOCTYPE x [<!ENTITY e \"e\">]>", "&e;", "<?pi x?>", "<i8>", "<double>", "<base64>" }.Select(Encoding.UTF8.GetBytes)];
        Fuzzer.Run("xml-rpc", Budget, random =>
        {
            var valid = Encoding.UTF8.GetBytes(random.Next(5) == 0 ? XmlResponse(random) : XmlCall(random));
            return random.Next(3) == 0 ? valid : Fuzzer.Mutate(random, valid, tokens);
        }, input =>
        {
            if (input.AsSpan().IndexOf("<methodResponse"u8) is >= 0 and < 40)
            {
                CheckReEncodes([XmlRpcReader.ReadResponse(input, Limits)]);
            }
            else
            {
                CheckReEncodes(XmlRpcReader.ReadCall(input, Limits).Params);
            }
        }, e => e is RpcFormatException);
    }

    [Test]
    public void The_json_rpc_decoder_returns_or_refuses_every_input()
    {
        byte[][] tokens = [.. new[] { "[", "]", "{", "}", "{\"a\":", ",", ":", "\"", "\\u0000", "\\ud800", "\\udc00", "\\\"", "null", "true", "1e999", "\"params\":", "\"id\":" }.Select(Encoding.UTF8.GetBytes)];
        Fuzzer.Run("json-rpc", Budget, random =>
        {
            var valid = Encoding.UTF8.GetBytes(random.Next(5) == 0 ? JsonResponse(random) : JsonCall(random));
            return random.Next(3) == 0 ? valid : Fuzzer.Mutate(random, valid, tokens);
        }, input =>
        {
            if (input.AsSpan().IndexOf("\"result\""u8) is >= 0 and < 4)
            {
                CheckReEncodes([JsonRpc.ReadResponse(input, Limits)]);
            }
            else
            {
                CheckReEncodes(JsonRpc.ReadCall(input, Limits).Params);
            }
        }, e => e is RpcFormatException or XenApiException);
    }

    // Whatever decodes must be answerable: the dispatcher's string check walks it, and both
    // writers encode it, the XML-RPC one as XML a strict parser accepts.
    private static void CheckReEncodes(IReadOnlyList<object?> values)
    {
        XmlText.FindUnrepresentable(values);
        var xml = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteSuccess(xml, values);
        using (var reader = XmlReader.Create(new MemoryStream(xml.WrittenSpan.ToArray())))
        {
            while (reader.Read())
            {
            }
        }
        var json = new ArrayBufferWriter<byte>();
        JsonRpc.WriteSuccess(json, new RpcRequest("x", [], RpcDialect.JsonRpcV2, "1"u8.ToArray()), values);
        using var document = System.Text.Json.JsonDocument.Parse(json.WrittenMemory, new System.Text.Json.JsonDocumentOptions { MaxDepth = 128 });
    }

    // Mostly shallow; sometimes around the limit; now and then far past it (a single chain, to stay small).
    private static int MaxDepth(Random random) => random.Next(10) switch
    {
        < 7 => random.Next(6),
        < 9 => Limits.MaxDepth - 3 + random.Next(6),
        _ => random.Next(100, 20_000),
    };

    private static int Count(Random random, int depth) =>
        depth == 0 && random.Next(8) == 0 ? random.Next(500, 5000) : random.Next(4);

    private static string XmlCall(Random random)
    {
        var sb = new StringBuilder("<?xml version=\"1.0\"?><methodCall><methodName>");
        sb.Append(XmlEscape(random, random.Next(3) == 0 ? Fuzzer.Text(random) : Fuzzer.Pick(random, Methods))).Append("</methodName><params>");
        var maxDepth = MaxDepth(random);
        for (var i = random.Next(4); i > 0; i--)
        {
            sb.Append("<param>");
            XmlValue(sb, random, 0, maxDepth);
            sb.Append("</param>");
        }
        return sb.Append("</params></methodCall>").ToString();
    }

    private static string XmlResponse(Random random)
    {
        var sb = new StringBuilder("<?xml version=\"1.0\"?><methodResponse>");
        if (random.Next(4) == 0)
        {
            sb.Append("<fault>");
            XmlValue(sb, random, 0, 2);
            sb.Append("</fault>");
        }
        else
        {
            sb.Append("<params><param>");
            XmlValue(sb, random, 0, MaxDepth(random));
            sb.Append("</param></params>");
        }
        return sb.Append("</methodResponse>").ToString();
    }

    private static void XmlValue(StringBuilder sb, Random random, int depth, int maxDepth)
    {
        if (maxDepth > 100)
        {
            // Far past the limit: one chain, written without recursing as deep as it nests.
            var (open, close) = random.Next(2) == 0
                ? ("<value><array><data>", "</data></array></value>")
                : ("<value><struct><member><name>m</name>", "</member></struct></value>");
            sb.Insert(sb.Length, open, maxDepth);
            XmlValue(sb, random, 0, 0);
            sb.Insert(sb.Length, close, maxDepth);
            return;
        }
        var kind = depth < maxDepth ? random.Next(12) : random.Next(10);
        sb.Append("<value>");
        switch (kind)
        {
            case 0:
                sb.Append(XmlEscape(random, Fuzzer.Text(random)));
                break;
            case 1:
                sb.Append("<string>").Append(XmlEscape(random, Fuzzer.Text(random))).Append("</string>");
                break;
            case 2:
                var tag = Fuzzer.Pick(random, ["int", "i4", "i8"]);
                sb.Append('<').Append(tag).Append('>').Append(Number(random, integer: true)).Append("</").Append(tag).Append('>');
                break;
            case 3:
                sb.Append("<boolean>").Append(Fuzzer.Pick(random, ["0", "1", "true", "false", "2", "", " 1 "])).Append("</boolean>");
                break;
            case 4:
                sb.Append("<double>").Append(Number(random, integer: false)).Append("</double>");
                break;
            case 5:
                sb.Append("<dateTime.iso8601>").Append(Fuzzer.Pick(random, ["20240101T00:00:00Z", "19700101T00:00:00", "2024-01-01T00:00:00Z", "99991231T23:59:59Z", "00000000T00:00:00Z", "x"])).Append("</dateTime.iso8601>");
                break;
            case 6:
                sb.Append("<base64>").Append(random.Next(2) == 0 ? Convert.ToBase64String(Encoding.UTF8.GetBytes(Fuzzer.Text(random))) : "!!" + random.Next()).Append("</base64>");
                break;
            case 7:
                sb.Append("<nil/>");
                break;
            case 8:
                sb.Append(Fuzzer.Pick(random, ["<string/>", "<array/>", "<struct/>", "<array><data/></array>", "<unknown>1</unknown>", "<string>a</string><string>b</string>", "text<int>1</int>"]));
                break;
            case 9:
                break;
            case 10:
                sb.Append("<array><data>");
                for (var i = Count(random, depth); i > 0; i--)
                {
                    XmlValue(sb, random, depth + 1, maxDepth);
                }
                sb.Append("</data></array>");
                break;
            default:
                sb.Append("<struct>");
                for (var i = Count(random, depth); i > 0; i--)
                {
                    sb.Append("<member><name>").Append(XmlEscape(random, Fuzzer.Text(random))).Append("</name>");
                    XmlValue(sb, random, depth + 1, maxDepth);
                    sb.Append("</member>");
                }
                sb.Append("</struct>");
                break;
        }
        sb.Append("</value>");
    }

    // Markup escaped; characters XML cannot carry either raw (as Python sends them) or as references.
    private static string XmlEscape(Random random, string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            if (c is '<' or '&' || (c < ' ' && random.Next(2) == 0) || (char.IsSurrogate(c) && random.Next(2) == 0))
            {
                sb.Append("&#").Append(((int)c).ToString(CultureInfo.InvariantCulture)).Append(';');
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }

    private static string Number(Random random, bool integer) => random.Next(4) switch
    {
        0 => Fuzzer.Pick(random, ["1e999", "-1e999", "9223372036854775808", "-9223372036854775809", "123456789012345678901234567890", "NaN", "inf", "-0", "1.5", "", " 7 ", "0x1F", "1e-400"]),
        1 => random.NextInt64(long.MinValue, long.MaxValue).ToString(CultureInfo.InvariantCulture),
        _ => integer ? random.Next(-1000, 1000).ToString(CultureInfo.InvariantCulture) : (random.NextDouble() * Math.Pow(10, random.Next(-300, 300))).ToString("R", CultureInfo.InvariantCulture),
    };

    private static string JsonCall(Random random)
    {
        var members = new List<string>
        {
            "\"method\":" + (random.Next(8) == 0 ? JsonScalar(random) : JsonString(random, random.Next(3) == 0 ? Fuzzer.Text(random) : Fuzzer.Pick(random, Methods))),
            "\"id\":" + (random.Next(4) == 0 ? JsonScalar(random) : random.Next(1000).ToString(CultureInfo.InvariantCulture)),
        };
        if (random.Next(6) != 0)
        {
            var sb = new StringBuilder();
            var maxDepth = MaxDepth(random);
            if (random.Next(8) == 0)
            {
                JsonValue(sb, random, 0, maxDepth);
            }
            else
            {
                sb.Append('[');
                for (var i = random.Next(4); i > 0; i--)
                {
                    JsonValue(sb, random, 1, maxDepth);
                    sb.Append(i > 1 ? "," : "");
                }
                sb.Append(']');
            }
            members.Add("\"params\":" + sb);
        }
        if (random.Next(2) == 0)
        {
            members.Add("\"jsonrpc\":" + (random.Next(4) == 0 ? JsonScalar(random) : "\"2.0\""));
        }
        if (random.Next(4) == 0)
        {
            var extra = new StringBuilder();
            JsonValue(extra, random, 0, MaxDepth(random));
            members.Add(JsonString(random, Fuzzer.Text(random)) + ":" + extra);
        }
        return "{" + string.Join(",", members.OrderBy(_ => random.Next())) + "}";
    }

    private static string JsonResponse(Random random)
    {
        var value = new StringBuilder();
        JsonValue(value, random, 0, MaxDepth(random));
        return random.Next(3) switch
        {
            0 => "{\"result\":null,\"error\":[" + string.Join(",", Enumerable.Range(0, random.Next(4)).Select(_ => JsonScalar(random))) + "],\"id\":1}",
            1 => "{\"result\":null,\"error\":{\"code\":1,\"message\":" + JsonScalar(random) + ",\"data\":" + value + "},\"id\":1}",
            _ => "{\"result\":" + value + ",\"error\":null,\"id\":1}",
        };
    }

    private static void JsonValue(StringBuilder sb, Random random, int depth, int maxDepth)
    {
        if (maxDepth > 100)
        {
            // Far past the limit: one chain, written without recursing as deep as it nests.
            var (open, close) = random.Next(2) == 0 ? ("[", "]") : ("{\"k\":", "}");
            sb.Insert(sb.Length, open, maxDepth);
            sb.Append(JsonScalar(random));
            sb.Insert(sb.Length, close, maxDepth);
            return;
        }
        var kind = depth < maxDepth ? random.Next(4) : 0;
        switch (kind)
        {
            case 0:
            case 3:
                sb.Append(JsonScalar(random));
                break;
            case 1:
                sb.Append('[');
                for (var i = Count(random, depth); i > 0; i--)
                {
                    JsonValue(sb, random, depth + 1, maxDepth);
                    sb.Append(i > 1 ? "," : "");
                }
                sb.Append(']');
                break;
            default:
                sb.Append('{');
                for (var i = Count(random, depth); i > 0; i--)
                {
                    sb.Append(JsonString(random, Fuzzer.Text(random))).Append(':');
                    JsonValue(sb, random, depth + 1, maxDepth);
                    sb.Append(i > 1 ? "," : "");
                }
                sb.Append('}');
                break;
        }
    }

    private static string JsonScalar(Random random) => random.Next(6) switch
    {
        0 => "null",
        1 => random.Next(2) == 0 ? "true" : "false",
        2 or 3 => Number(random, integer: random.Next(2) == 0),
        _ => JsonString(random, Fuzzer.Text(random)),
    };

    // Escaped as JSON encoders do, with lone surrogates and controls as \u escapes (sometimes raw, which JSON forbids).
    private static string JsonString(Random random, string text)
    {
        var sb = new StringBuilder("\"");
        foreach (var c in text)
        {
            if (c is '"' or '\\' || (c < ' ' && random.Next(4) != 0) || char.IsSurrogate(c))
            {
                sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.Append('"').ToString();
    }
}
