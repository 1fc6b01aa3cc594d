using System.Text.RegularExpressions;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>
/// Strings XML cannot carry, and request bodies Kestrel cannot frame, over real sockets: clear
/// errors, identical over both protocols, and every XML-RPC reply parseable by a strict parser.
/// </summary>
public class ProtocolHardeningTests
{
    // C0 controls other than tab, LF and CR, and the two non-characters XML 1.0 excludes.
    private static readonly string[] Unrepresentable = ["\u0000", "\u0001", "\u0008", "\u000B", "\u000C", "\u001F", "\uFFFE", "\uFFFF"];

    private static async Task<string> PoolAsync(XenApiClient client) =>
        (string)((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0]!;

    private static async Task<string[]> RefusalAsync(Func<Task> call)
    {
        var e = await XenApiAssert.FailsAsync(call, "INVALID_VALUE");
        return [e.Code, .. e.Parameters];
    }

    [Test]
    public async Task Strings_xml_cannot_carry_are_refused_identically_over_every_dialect_and_nothing_is_stored()
    {
        await using var daemon = await TestDaemon.StartAsync();
        var answers = new Dictionary<RpcDialect, List<string[]>>();
        foreach (var dialect in Dialects.All)
        {
            using var client = await daemon.LoginAsync(dialect);
            var pool = await PoolAsync(client);
            var seen = answers[dialect] = [];
            foreach (var c in Unrepresentable)
            {
                var bad = "a" + c + "b";
                seen.Add(await RefusalAsync(() => client.InvokeAsync("pool.set_name_label", pool, bad)));
                seen.Add(await RefusalAsync(() => client.InvokeAsync("pool.set_other_config", pool, new Dictionary<string, object?> { ["k"] = bad })));
                seen.Add(await RefusalAsync(() => client.InvokeAsync("pool.set_other_config", pool, new Dictionary<string, object?> { [bad] = "v" })));
                seen.Add(await RefusalAsync(() => client.InvokeAsync("pool.add_to_other_config", pool, "k", bad)));
                seen.Add(await RefusalAsync(() => client.InvokeAsync("VM.create", new Dictionary<string, object?> { ["name_label"] = "ok", ["tags"] = new object?[] { "fine", bad } })));
                seen.Add(await RefusalAsync(() => client.CallAsync("session.login_with_password", ["root", bad, "1.0", "test"])));
            }
            Assert.That(await client.InvokeAsync("pool.get_name_label", pool), Is.Empty, "nothing was stored");
        }
        Assert.Multiple(() =>
        {
            Assert.That(answers[RpcDialect.JsonRpcV1], Is.EqualTo(answers[RpcDialect.XmlRpc]));
            Assert.That(answers[RpcDialect.JsonRpcV2], Is.EqualTo(answers[RpcDialect.XmlRpc]));
            Assert.That(answers[RpcDialect.XmlRpc][0], Is.EqualTo(new[] { "INVALID_VALUE", "value", "a\\u0000b" }), "the error names the parameter and shows the character");
            Assert.That(answers[RpcDialect.XmlRpc][^1], Is.EqualTo(new[] { "INVALID_VALUE", "pwd", "a\\uFFFFb" }));
        });
    }

    [Test]
    public async Task Every_xml_rpc_reply_parses_in_python_even_with_bad_strings_already_stored()
    {
        await using var daemon = await TestDaemon.StartAsync();
        // As a database restored from a dump could hold them: behind the API's back.
        var planted = "planted" + string.Concat(Unrepresentable) + "\uD800end";
        await daemon.InsertAsync(ApiSchema.Class("VM"), new Dictionary<string, object?>
        {
            ["name_label"] = planted,
            ["other_config"] = ValueMap.FromPairs([new("key\u0000", "value\uFFFF")]),
        });
        const string Script = """
            import sys, xmlrpc.client
            url, password = sys.argv[1], sys.argv[2]
            server = xmlrpc.client.ServerProxy(url)
            session = server.session.login_with_password("root", password, "1.0", "test")["Value"]
            pool = server.pool.get_all(session)["Value"][0]
            # xmlrpc.client sends control characters raw: the server refuses them as over JSON-RPC.
            for bad in ["a\x00b", "a\x1fb", "a\ufffeb"]:
                answer = server.pool.set_name_label(session, pool, bad)
                print("set_name_label", answer["Status"], answer["ErrorDescription"][:2])
            records = server.VM.get_all_records(session)["Value"]
            planted = [r for r in records.values() if r["name_label"].startswith("planted")][0]
            print("planted", ascii(planted["name_label"]), ascii(planted["other_config"]))
            events = getattr(server, "event.from")(session, ["*"], "", 1.0)["Value"]
            print("events", len(events["events"]) > 0)
            print("OK")
            """;
        var (exitCode, output) = await RunPythonAsync(Script, daemon.Uri.ToString(), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("set_name_label Failure ['INVALID_VALUE', 'value']"));
            Assert.That(Regex.Matches(output, "set_name_label Failure").Count, Is.EqualTo(3), output);
            // Each character XML cannot carry arrives as U+FFFD; everything else intact.
            Assert.That(output, Does.Contain("planted '" + "planted" + string.Concat(Enumerable.Repeat("\\ufffd", Unrepresentable.Length + 1)) + "end'"));
            Assert.That(output, Does.Contain("{'key\\ufffd': 'value\\ufffd'}"));
            Assert.That(output, Does.Contain("events True").And.Contain("OK"));
        });
    }

    private static async Task<(int ExitCode, string Output)> RunPythonAsync(string script, params string[] args)
    {
        var start = new ProcessStartInfo(File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(script);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        var output = await stdout + await stderr;
        TestContext.Out.WriteLine(output);
        return (process.ExitCode, output);
    }

    [TestCase("10000000000000000", TestName = "A chunk size of 2^64 is an HTTP 400 with no stack trace logged")]
    [TestCase("FFFFFFFFFFFFFFFF", TestName = "A chunk size of 2^64 - 1 is an HTTP 400 with no stack trace logged")]
    [TestCase("zz", TestName = "A chunk size that is not hex is an HTTP 400 with no stack trace logged")]
    public async Task Unframeable_chunked_bodies_are_a_400_and_log_no_stack_trace(string chunkSize)
    {
        var logDir = Directory.CreateTempSubdirectory("xapi-log-").FullName;
        using var cleanup = new DirectoryCleanup(logDir);
        string response;
        await using (var daemon = await TestDaemon.StartAsync(o => o.LogFile = Path.Combine(logDir, "xapi.log")))
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(daemon.Uri.Host, daemon.Uri.Port);
            var stream = tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(
                $"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n{chunkSize}\r\n<methodCall>\r\n"));
            using var reader = new StreamReader(stream, Encoding.ASCII);
            response = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
            using var client = await daemon.LoginAsync();
            Assert.That(await client.InvokeAsync("pool.get_all"), Is.Not.Empty, "the daemon still serves");
        }
        var log = string.Concat(Directory.GetFiles(logDir).Select(File.ReadAllText));
        Assert.Multiple(() =>
        {
            Assert.That(response, Does.StartWith("HTTP/1.1 400 "));
            Assert.That(response, Does.Contain("Connection: close"));
            Assert.That(log, Does.Not.Contain("unhandled exception"));
            Assert.That(log, Does.Not.Contain("   at "), "no stack trace");
        });
    }
}
