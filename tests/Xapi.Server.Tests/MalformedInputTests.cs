using System.Diagnostics;
using System.Net;
using System.Text;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>Hostile and broken requests over real HTTP: clear errors, bounded memory, still serving.</summary>
public class MalformedInputTests
{
    private TestDaemon _daemon = null!;
    private HttpClient _http = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _daemon = await TestDaemon.StartAsync();
        _http = new HttpClient { BaseAddress = _daemon.Uri };
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        _http.Dispose();
        await _daemon.DisposeAsync();
    }

    private async Task<(HttpStatusCode Status, string Body, string? ContentType)> PostAsync(string path, byte[] body, string contentType = "text/xml")
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
        using var response = await _http.PostAsync(path, content);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response.Content.Headers.ContentType?.ToString());
    }

    private async Task AssertStillServingAsync()
    {
        using var client = await _daemon.LoginAsync();
        Assert.That(await client.InvokeAsync("pool.get_all"), Is.Not.Empty);
    }

    [Test]
    public async Task Billion_laughs_gets_http_500_and_the_server_keeps_serving()
    {
        var xml = """
            <?xml version="1.0"?>
            <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
            <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
            <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
            <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
            <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
            <methodCall><methodName>&lol9;</methodName></methodCall>
            """;
        var (status, body, _) = await PostAsync("/", Encoding.UTF8.GetBytes(xml));
        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(body, Does.Contain("DTD"));
        });
        await AssertStillServingAsync();
    }

    [Test]
    public async Task External_entities_are_refused()
    {
        var xml = """<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/hostname">]><methodCall><methodName>system.isAlive</methodName><params><param><value>&e;</value></param></params></methodCall>""";
        var (status, body, _) = await PostAsync("/", Encoding.UTF8.GetBytes(xml));
        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(body, Does.Not.Contain(File.Exists("/etc/hostname") ? File.ReadAllText("/etc/hostname").Trim() : "\u0000"));
        });
    }

    [Test]
    public async Task Ten_megabyte_bodies_are_refused_and_memory_stays_bounded()
    {
        var body = new byte[10 * 1024 * 1024];
        Array.Fill(body, (byte)'a');
        var process = Process.GetCurrentProcess();
        GC.Collect();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < 10; i++)
        {
            var (status, _, _) = await PostAsync(i % 2 == 0 ? "/" : "/jsonrpc", body, i % 2 == 0 ? "text/xml" : "application/json");
            Assert.That(status, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
        }
        var after = GC.GetTotalMemory(forceFullCollection: true);
        TestContext.Out.WriteLine($"managed heap before {before / 1024} KiB, after 100 MB of refused bodies {after / 1024} KiB");
        Assert.That(after - before, Is.LessThan(16L * 1024 * 1024), "the server does not keep what it refused");
        await AssertStillServingAsync();
    }

    [Test]
    public async Task A_chunked_body_over_the_limit_is_refused_too()
    {
        using var content = new StreamContent(new MemoryStream(new byte[1024 * 1024]));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("text/xml");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await _http.SendAsync(request);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
    }

    [Test]
    public async Task Ten_thousand_deep_nesting_is_refused()
    {
        var xml = "<methodCall><methodName>system.isAlive</methodName><params><param>"
            + string.Concat(Enumerable.Repeat("<value><array><data>", 10_000))
            + string.Concat(Enumerable.Repeat("</data></array></value>", 10_000)) + "</param></params></methodCall>";
        var json = "{\"method\":\"system.isAlive\",\"id\":1,\"params\":[" + new string('[', 10_000) + new string(']', 10_000) + "]}";
        await using var roomy = await TestDaemon.StartAsync(o => o.MaxBodyBytes = 1 << 20);
        using var http = new HttpClient { BaseAddress = roomy.Uri };
        using var xmlResponse = await http.PostAsync("/", new StringContent(xml, Encoding.UTF8, "text/xml"));
        using var jsonResponse = await http.PostAsync("/jsonrpc", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Multiple(async () =>
        {
            Assert.That(xmlResponse.StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(await xmlResponse.Content.ReadAsStringAsync(), Does.Contain("nesting"));
            Assert.That(jsonResponse.StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
        });
    }

    [Test]
    public async Task Invalid_utf8_is_refused()
    {
        var bytes = Encoding.UTF8.GetBytes("<methodCall><methodName>system.isAlive</methodName><params><param><value>XY</value></param></params></methodCall>");
        var at = Array.IndexOf(bytes, (byte)'X');
        bytes[at] = 0xC3;
        bytes[at + 1] = 0x28;
        var (status, _, _) = await PostAsync("/", bytes);
        var jsonBytes = Encoding.UTF8.GetBytes("""{"method":"system.isAlive","params":["XY"],"id":1}""");
        at = Array.IndexOf(jsonBytes, (byte)'X');
        jsonBytes[at] = 0xFF;
        var (jsonStatus, _, _) = await PostAsync("/jsonrpc", jsonBytes, "application/json");
        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(jsonStatus, Is.EqualTo(HttpStatusCode.InternalServerError));
        });
    }

    [Test]
    public async Task A_json_rpc_call_without_id_is_refused()
    {
        var (status, body, _) = await PostAsync("/jsonrpc", """{"jsonrpc":"2.0","method":"pool.get_all","params":["x"]}"""u8.ToArray(), "application/json");
        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(body, Does.Contain("no id"));
        });
    }

    [Test]
    public async Task Wrong_types_are_xenapi_errors_not_http_errors()
    {
        using var client = await _daemon.LoginAsync(RpcDialect.JsonRpcV2);
        var vm = ((IReadOnlyList<object?>)(await client.InvokeAsync("VM.get_all"))!)[0];
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.set_memory_static_max", vm, true), "FIELD_TYPE_ERROR", "value");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.get_record", 42L), "FIELD_TYPE_ERROR", "self");
        await XenApiAssert.FailsAsync(() => client.CallAsync("pool.get_all", [new Dictionary<string, object?>()]), "SESSION_INVALID");
    }

    [Test]
    public async Task Replies_have_exact_content_types_and_cors()
    {
        var (_, _, xmlType) = await PostAsync("/", "<methodCall><methodName>system.isAlive</methodName></methodCall>"u8.ToArray());
        var (_, _, jsonType) = await PostAsync("/jsonrpc", """{"method":"system.isAlive","params":[],"id":1}"""u8.ToArray(), "application/json");
        using var preflight = new HttpRequestMessage(HttpMethod.Options, "/jsonrpc");
        preflight.Headers.Add("Origin", "http://example.test");
        preflight.Headers.Add("Access-Control-Request-Method", "POST");
        using var response = await _http.SendAsync(preflight);
        Assert.Multiple(() =>
        {
            Assert.That(xmlType, Is.EqualTo("text/xml"));
            Assert.That(jsonType, Is.EqualTo("application/json"));
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(response.Headers.GetValues("Access-Control-Allow-Origin"), Does.Contain("*"));
        });
    }

    [Test]
    public async Task Xml_rpc_is_served_on_any_other_path()
    {
        var (status, body, _) = await PostAsync("/xmlrpc", "<methodCall><methodName>system.isAlive</methodName><params><param><value>hi</value></param></params></methodCall>"u8.ToArray());
        var (rpc2Status, _, _) = await PostAsync("/RPC2", "<methodCall><methodName>system.isAlive</methodName></methodCall>"u8.ToArray());
        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(body, Does.Contain("<value>hi</value>"));
            Assert.That(rpc2Status, Is.EqualTo(HttpStatusCode.OK));
        });
    }
}
