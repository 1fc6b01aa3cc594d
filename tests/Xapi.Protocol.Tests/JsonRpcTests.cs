using System.Buffers;
using System.Text;
using Xapi.Model;

namespace Xapi.Protocol.Tests;

public class JsonRpcTests
{
    private static RpcRequest Call(string json) => JsonRpc.ReadCall(Encoding.UTF8.GetBytes(json), RpcLimits.Default);

    private static string Reply(RpcRequest request, object? value, XenApiException? error = null)
    {
        var buffer = new ArrayBufferWriter<byte>();
        if (error is null)
        {
            JsonRpc.WriteSuccess(buffer, request, value);
        }
        else
        {
            JsonRpc.WriteFailure(buffer, request, error);
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    [Test]
    public void Version_2_success_has_no_error_key_and_echoes_the_id()
    {
        var request = Call("""{"jsonrpc":"2.0","method":"host.get_all","params":["s"],"id":"a\"b"}""");
        Assert.Multiple(() =>
        {
            Assert.That(request.Dialect, Is.EqualTo(RpcDialect.JsonRpcV2));
            Assert.That(Reply(request, new object?[] { "OpaqueRef:1" }), Is.EqualTo("""{"jsonrpc":"2.0","result":["OpaqueRef:1"],"id":"a\"b"}"""));
        });
    }

    [Test]
    public void Version_2_failure_has_code_one_and_the_xenapi_code_as_message()
    {
        var request = Call("""{"jsonrpc":"2.0","method":"x","params":[],"id":17}""");
        Assert.That(Reply(request, null, XenApiErrors.HandleInvalid("VM", "OpaqueRef:x")),
            Is.EqualTo("""{"jsonrpc":"2.0","error":{"code":1,"message":"HANDLE_INVALID","data":["VM","OpaqueRef:x"]},"id":17}"""));
    }

    [Test]
    public void Version_1_replies_carry_result_and_error_side_by_side()
    {
        var request = Call("""{"method":"x","params":[],"id":1}""");
        Assert.Multiple(() =>
        {
            Assert.That(request.Dialect, Is.EqualTo(RpcDialect.JsonRpcV1));
            Assert.That(Reply(request, 5L), Is.EqualTo("""{"result":5,"error":null,"id":1}"""));
            Assert.That(Reply(request, null, XenApiErrors.SessionInvalid("s")), Is.EqualTo("""{"result":null,"error":["SESSION_INVALID","s"],"id":1}"""));
        });
    }

    [Test]
    public void Datetimes_are_xenapi_strings_and_int64_are_numbers()
    {
        var request = Call("""{"jsonrpc":"2.0","method":"x","params":[],"id":1}""");
        var value = new ValueMap(new Dictionary<object, object?> { ["t"] = new DateTime(2012, 1, 1, 0, 0, 0, DateTimeKind.Utc), ["n"] = 1L << 40 });
        Assert.That(Reply(request, value), Does.Contain("""{"t":"20120101T00:00:00Z","n":1099511627776}"""));
    }

    [TestCase("""{"jsonrpc":"2.0","method":"x","params":[]}""", "no id")]
    [TestCase("""{"jsonrpc":"2.0","params":[],"id":1}""", "no method")]
    [TestCase("""[1,2]""", "must be an object")]
    [TestCase("""{"method":"x","params":{"a":1},"id":1}""", "params must be an array")]
    [TestCase("""{"method":"x","params":[1,""", "malformed")]
    public void Malformed_calls_are_format_errors(string json, string reason)
    {
        var e = Assert.Throws<RpcFormatException>(() => Call(json));
        Assert.That(e!.Message, Does.Contain(reason));
    }

    [Test]
    public void Deep_nesting_is_bounded()
    {
        var json = "{\"method\":\"x\",\"id\":1,\"params\":[" + new string('[', 10_000) + new string(']', 10_000) + "]}";
        Assert.Throws<RpcFormatException>(() => JsonRpc.ReadCall(Encoding.UTF8.GetBytes(json), new RpcLimits(MaxBodyBytes: 1 << 20)));
    }

    [Test]
    public void Invalid_utf8_in_a_string_is_a_format_error()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"method":"xy","params":[],"id":1}""");
        bytes[11] = 0xFF;
        Assert.Throws<RpcFormatException>(() => JsonRpc.ReadCall(bytes, RpcLimits.Default));
    }
}
