using System.Buffers;
using System.Text;
using System.Xml;

namespace Xapi.Protocol.Tests;

/// <summary>Strings XML 1.0 cannot carry: never in a reply, read back exactly from a call.</summary>
public class XmlTextTests
{
    private static string Reply(object? value)
    {
        var output = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteSuccess(output, value);
        return Encoding.UTF8.GetString(output.WrittenSpan);
    }

    private static string StrictlyParsedValue(string reply)
    {
        // XmlReader's defaults check every character, as expat does.
        using var reader = XmlReader.Create(new StringReader(reply));
        var text = new StringBuilder();
        while (reader.Read())
        {
            if (reader.NodeType == XmlNodeType.Text)
            {
                text.Append(reader.Value);
            }
        }
        return text.ToString();
    }

    [Test]
    public void A_reply_holding_any_utf16_code_unit_is_well_formed_xml()
    {
        var all = Enumerable.Range(0, 0x10000).Select(c => "<" + (char)c + ">").ToArray();
        var parsed = StrictlyParsedValue(Reply(all));
        Assert.That(parsed, Does.Contain("<\uFFFD>").And.Contain("<\t>").And.Contain("<😀>".Replace("😀", "\uFFFD", StringComparison.Ordinal)));
    }

    [Test]
    public void A_reply_writes_what_xml_cannot_carry_as_the_replacement_character_and_keeps_the_rest()
    {
        var parsed = StrictlyParsedValue(Reply("a\u0000b\u001Fc\uFFFEd\uFFFFe\uD800f\t\n😀\u0085\u2028"));
        Assert.That(parsed, Is.EqualTo("StatusSuccessValue" + "a\uFFFDb\uFFFDc\uFFFDd\uFFFDe\uFFFDf\t\n😀\u0085\u2028"));
    }

    [Test]
    public void A_call_carries_control_characters_to_the_server_unchanged()
    {
        var value = "a\u0000b\u0001\u001F\u000B\u000C\uFFFE\uFFFF<&>\r\t\n😀";
        var output = new ArrayBufferWriter<byte>();
        XmlRpcWriter.WriteCall(output, "pool.set_name_label", [value, new Dictionary<string, object?> { [value] = value }]);
        var call = XmlRpcReader.ReadCall(output.WrittenMemory, RpcLimits.Default);
        Assert.Multiple(() =>
        {
            Assert.That(call.Params[0], Is.EqualTo(value));
            Assert.That(((IReadOnlyDictionary<string, object?>)call.Params[1]!)[value], Is.EqualTo(value));
        });
    }

    [Test]
    public void Raw_control_characters_in_a_call_are_read_as_python_sends_them()
    {
        var body = Encoding.UTF8.GetBytes("<?xml version='1.0'?><methodCall><methodName>x</methodName><params><param><value><string>a\u0000b\u001F\uFFFE\uFFFF\uFEFFc</string></value></param></params></methodCall>");
        var call = XmlRpcReader.ReadCall(body, RpcLimits.Default);
        Assert.That(call.Params[0], Is.EqualTo("a\u0000b\u001F\uFFFE\uFFFF\uFEFFc"));
    }

    [TestCase("&#xD800;")]
    [TestCase("&#xDFFF;x")]
    [TestCase("a&#xDC00;&#xD800;")]
    public void A_lone_surrogate_in_a_call_is_malformed_as_over_json_rpc(string text)
    {
        var body = Encoding.UTF8.GetBytes($"<methodCall><methodName>x</methodName><params><param><value>{text}</value></param></params></methodCall>");
        Assert.That(() => XmlRpcReader.ReadCall(body, RpcLimits.Default), Throws.TypeOf<RpcFormatException>());
    }

    [Test]
    public void A_surrogate_pair_written_as_references_is_text()
    {
        var body = Encoding.UTF8.GetBytes("<methodCall><methodName>x</methodName><params><param><value>&#xD83D;&#xDE00;</value></param></params></methodCall>");
        Assert.That(XmlRpcReader.ReadCall(body, RpcLimits.Default).Params[0], Is.EqualTo("😀"));
    }

    [TestCase("plain", -1)]
    [TestCase("tab\tlf\ncr\r", -1)]
    [TestCase("😀", -1)]
    [TestCase("a\u0000", 1)]
    [TestCase("ab\uFFFF", 2)]
    public void The_first_character_xml_cannot_carry_is_found(string text, int expected) =>
        Assert.That(XmlText.IndexOfUnrepresentable(text), Is.EqualTo(expected));

    [Test]
    public void Lone_surrogates_are_found_and_pairs_are_not()
    {
        // Built here: attribute arguments are stored as UTF-8, which cannot hold a lone surrogate.
        Assert.Multiple(() =>
        {
            Assert.That(XmlText.IndexOfUnrepresentable(new string(['\uDE00', '\uD83D'])), Is.Zero);
            Assert.That(XmlText.IndexOfUnrepresentable("😀" + '\uD83D'), Is.EqualTo(2));
            Assert.That(XmlText.IndexOfUnrepresentable("a" + '\uDC00' + "b"), Is.EqualTo(1));
            Assert.That(XmlText.HasLoneSurrogate("😀" + '\uD83D'), Is.True);
            Assert.That(XmlText.HasLoneSurrogate("😀\u0000"), Is.False);
        });
    }

    [Test]
    public void Errors_show_what_xml_cannot_carry_as_escapes() =>
        Assert.That(XmlText.Visible("a\u0000b😀\uFFFE\uD800"), Is.EqualTo("a\\u0000b😀\\uFFFE\\uD800"));
}
