using System.Buffers;
using System.Text;
using Xapi.Model;

namespace Xapi.Protocol.Tests;

public class XmlRpcTests
{
    private static string Success(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteSuccess(buffer, value);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static RpcRequest Call(string xml) => XmlRpcReader.ReadCall(Encoding.UTF8.GetBytes(xml), RpcLimits.Default);

    [Test]
    public void Success_envelope_is_compact_with_untyped_strings_and_int64()
    {
        var record = new ValueMap(new Dictionary<object, object?> { ["name_label"] = "a<b", ["memory"] = 1L << 40, ["ok"] = true });
        Assert.That(Success(record), Is.EqualTo(
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>" +
            "<member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct>" +
            "<member><name>name_label</name><value>a&lt;b</value></member>" +
            "<member><name>memory</name><value>1099511627776</value></member>" +
            "<member><name>ok</name><value><boolean>1</boolean></value></member>" +
            "</struct></value></member></struct></value></param></params></methodResponse>"));
    }

    [Test]
    public void Failure_envelope_lists_code_then_parameters()
    {
        var buffer = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteFailure(buffer, ["HANDLE_INVALID", "VM", "OpaqueRef:x"]);
        Assert.That(Encoding.UTF8.GetString(buffer.WrittenSpan), Does.Contain(
            "<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>" +
            "<value>HANDLE_INVALID</value><value>VM</value><value>OpaqueRef:x</value></data></array></value></member>"));
    }

    [TestCase(1.0, "<double>1</double>")]
    [TestCase(0.1, "<double>0.1</double>")]
    [TestCase(1e20, "<double>1e+20</double>")]
    public void Doubles_have_sixteen_significant_digits(double value, string expected) =>
        Assert.That(Success(value), Does.Contain(expected));

    [Test]
    public void Datetimes_void_and_i4_use_their_xenapi_forms()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Success(new DateTime(2012, 1, 1, 0, 0, 0, DateTimeKind.Utc)), Does.Contain("<dateTime.iso8601>20120101T00:00:00Z</dateTime.iso8601>"));
            Assert.That(Success(null), Does.Contain("<name>Value</name><value></value>"));
            Assert.That(Success(3), Does.Contain("<value><i4>3</i4></value>"));
        });
    }

    [Test]
    public void Pretty_printed_and_typed_input_is_accepted()
    {
        var request = Call("""
            <?xml version="1.0"?>
            <methodCall>
              <methodName>VM.set_memory</methodName>
              <params>
                <param><value><string>OpaqueRef:s</string></value></param>
                <param>
                  <value>
                    <struct>
                      <member><name>a</name><value><i8>42</i8></value></member>
                      <member><name>b</name><value><boolean>0</boolean></value></member>
                      <member><name>c</name><value><array><data/></array></value></member>
                      <member><name>d</name><value/></member>
                      <member><name>e</name><value><struct/></value></member>
                      <member><name>f</name><value><nil/></value></member>
                      <member><name>g</name><value><base64>aGk=</base64></value></member>
                      <member><name>h</name><value><dateTime.iso8601>20200102T03:04:05Z</dateTime.iso8601></value></member>
                    </struct>
                  </value>
                </param>
                <param><value>  untyped with spaces </value></param>
              </params>
            </methodCall>
            """);
        Assert.That(request.MethodName, Is.EqualTo("VM.set_memory"));
        var s = (IReadOnlyDictionary<string, object?>)request.Params[1]!;
        Assert.Multiple(() =>
        {
            Assert.That(request.Params[0], Is.EqualTo("OpaqueRef:s"));
            Assert.That(s["a"], Is.EqualTo(42L));
            Assert.That(s["b"], Is.EqualTo(false));
            Assert.That(s["c"], Is.Empty);
            Assert.That(s["d"], Is.EqualTo(""));
            Assert.That(s["e"], Is.Empty);
            Assert.That(s["f"], Is.Null);
            Assert.That(s["g"], Is.EqualTo("hi"u8.ToArray()));
            Assert.That(s["h"], Is.EqualTo(new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc)));
            Assert.That(request.Params[2], Is.EqualTo("  untyped with spaces "));
        });
    }

    [Test]
    public void Billion_laughs_is_refused_without_expansion()
    {
        var xml = """
            <?xml version="1.0"?>
            <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
            <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
            <methodCall><methodName>&lol3;</methodName></methodCall>
            """;
        Assert.Throws<RpcFormatException>(() => Call(xml));
    }

    [Test]
    public void External_entities_are_never_resolved()
    {
        var xml = """
            <?xml version="1.0"?>
            <!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
            <methodCall><methodName>x</methodName><params><param><value>&e;</value></param></params></methodCall>
            """;
        Assert.Throws<RpcFormatException>(() => Call(xml));
    }

    [Test]
    public void Deep_nesting_is_bounded()
    {
        var sb = new StringBuilder("<methodCall><methodName>x</methodName><params><param>");
        for (var i = 0; i < 10_000; i++)
        {
            sb.Append("<value><array><data>");
        }
        for (var i = 0; i < 10_000; i++)
        {
            sb.Append("</data></array></value>");
        }
        sb.Append("</param></params></methodCall>");
        var limits = new RpcLimits(MaxBodyBytes: 1 << 20);
        var e = Assert.Throws<RpcFormatException>(() => XmlRpcReader.ReadCall(Encoding.UTF8.GetBytes(sb.ToString()), limits));
        Assert.That(e!.Message, Does.Contain("nesting"));
    }

    [Test]
    public void Invalid_utf8_is_a_format_error()
    {
        var bytes = Encoding.UTF8.GetBytes("<methodCall><methodName>x</methodName><params><param><value>AB</value></param></params></methodCall>");
        var index = Array.IndexOf(bytes, (byte)'A');
        bytes[index] = 0xC3;
        bytes[index + 1] = 0x28;
        Assert.Throws<RpcFormatException>(() => XmlRpcReader.ReadCall(bytes, RpcLimits.Default));
    }

    [Test]
    public void Responses_round_trip_through_the_reader()
    {
        var value = new ValueMap(new Dictionary<object, object?> { ["list"] = new object?[] { "a", 2L, 2.5, true }, ["nested"] = ValueMap.Empty });
        var buffer = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteSuccess(buffer, value);
        var envelope = (IReadOnlyDictionary<string, object?>)XmlRpcReader.ReadResponse(buffer.WrittenMemory, RpcLimits.Default)!;
        var back = (IReadOnlyDictionary<string, object?>)envelope["Value"]!;
        Assert.That((IEnumerable<object?>)back["list"]!, Is.EqualTo(new object?[] { "a", "2", 2.5, true }), "int64 travels untyped, as a string");
    }

    [Test]
    public void Random_mutations_of_a_valid_call_never_escape_as_other_exceptions()
    {
        var valid = Encoding.UTF8.GetBytes("<?xml version=\"1.0\"?><methodCall><methodName>VM.get_record</methodName><params><param><value><string>OpaqueRef:1</string></value></param><param><value><struct><member><name>a</name><value><array><data><value><int>1</int></value></data></array></value></member></struct></value></param></params></methodCall>");
        var random = new Random(1234);
        for (var i = 0; i < 20_000; i++)
        {
            var mutated = (byte[])valid.Clone();
            for (var j = random.Next(1, 4); j > 0; j--)
            {
                mutated[random.Next(mutated.Length)] = (byte)random.Next(256);
            }
            try
            {
                XmlRpcReader.ReadCall(mutated, RpcLimits.Default);
            }
            catch (RpcFormatException)
            {
            }
        }
        Assert.Pass("20,000 mutated calls parsed or rejected cleanly");
    }
}
