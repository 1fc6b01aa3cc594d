using System.Text;
using Xapi.Model;

namespace Xapi.Protocol.Tests;

/// <summary>What the decoder fuzz runs found, kept as plain tests.</summary>
public class CodecHardeningTests
{
    [TestCase("{\"method\":\"system.isAlive\",\"id\":1}{\"method\":\"session.logout\",\"id\":2}")]
    [TestCase("{\"method\":\"system.isAlive\",\"id\":1} trailing")]
    public void A_json_rpc_call_is_exactly_one_object(string body) =>
        Assert.That(() => JsonRpc.ReadCall(Encoding.UTF8.GetBytes(body), RpcLimits.Default), Throws.TypeOf<RpcFormatException>());

    [TestCase("{\"result\":null,\"error\":[],\"id\":1}")]
    [TestCase("{\"result\">true}")]
    [TestCase("[1,")]
    [TestCase("{\"result\":\"\\ud800\"}")]
    public void A_malformed_json_rpc_response_is_a_format_error(string body) =>
        Assert.That(() => JsonRpc.ReadResponse(Encoding.UTF8.GetBytes(body), RpcLimits.Default), Throws.TypeOf<RpcFormatException>());

    [Test]
    public void A_json_rpc_error_response_is_the_xenapi_error_it_carries() =>
        Assert.That(() => JsonRpc.ReadResponse("{\"result\":null,\"error\":[\"SESSION_INVALID\",\"x\"],\"id\":1}"u8.ToArray(), RpcLimits.Default),
            Throws.TypeOf<XenApiException>().With.Property("Code").EqualTo("SESSION_INVALID"));

    // Found by the fuzz run (seed 1271913401): a byte-order mark inside the XML declaration made
    // System.Xml's encoding switch throw ArgumentOutOfRangeException.
    [Test]
    public void A_byte_order_mark_inside_the_xml_declaration_is_read_or_refused_as_malformed()
    {
        var alone = Encoding.UTF8.GetBytes("<?xml version=\"1.0\uFEFF\"?>");
        var call = Encoding.UTF8.GetBytes("<?xml version=\"1.0\uFEFF\"?><methodCall><methodName>system.isAlive</methodName></methodCall>");
        Assert.Multiple(() =>
        {
            Assert.That(() => XmlRpcReader.ReadCall(alone, RpcLimits.Default), Throws.TypeOf<RpcFormatException>());
            Assert.That(() => XmlRpcReader.ReadResponse(alone, RpcLimits.Default), Throws.TypeOf<RpcFormatException>());
            Assert.That(XmlRpcReader.ReadCall(call, RpcLimits.Default).MethodName, Is.EqualTo("system.isAlive"));
        });
    }
}
