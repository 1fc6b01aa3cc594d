using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>Replies larger than the reply buffer go to the client as they are encoded.</summary>
[TestFixtureSource(typeof(RoundTripTests), nameof(RoundTripTests.Protocols))]
public class ReplyStreamingTests(RpcDialect dialect)
{
    [Test]
    public async Task A_reply_larger_than_the_buffer_is_streamed_and_a_small_one_keeps_its_length()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxBufferedReplyBytes = 16 * 1024);
        using var client = await daemon.LoginAsync(dialect);
        var names = new List<string>();
        for (var i = 0; i < 40; i++)
        {
            names.Add($"streamed {i} <&> é");
            await client.CreateVmAsync(names[^1]);
        }
        using var http = new HttpClient();

        var (large, largeLength, largeChunked) = await PostAsync(http, daemon, client.Session!, "VM.get_all_records");
        var (small, smallLength, _) = await PostAsync(http, daemon, client.Session!, "pool.get_all");
        var records = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_all_records"))!;
        Assert.Multiple(() =>
        {
            Assert.That(large, Has.Length.GreaterThan(16 * 1024 * 2), "the reply is well over the buffer");
            Assert.That(largeLength, Is.Null, "a streamed reply has no length");
            Assert.That(largeChunked, Is.True, "a streamed reply is chunked");
            Assert.That(records.Values.Select(r => ((IReadOnlyDictionary<string, object?>)r!)["name_label"]), Is.SupersetOf(names), "and decodes to every record");
            Assert.That(smallLength, Is.EqualTo(small.Length), "a small reply is sent whole with its length, as real servers send replies");
        });
    }

    private async Task<(byte[] Body, long? Length, bool? Chunked)> PostAsync(HttpClient http, TestDaemon daemon, string session, string method)
    {
        var isXml = dialect == RpcDialect.XmlRpc;
        var body = isXml
            ? $"<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params><param><value>{session}</value></param></params></methodCall>"
            : $"{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":[\"{session}\"],\"id\":1}}";
        using var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue(isXml ? "text/xml" : "application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(daemon.Uri, isXml ? "/" : "/jsonrpc")) { Content = content };
        // Headers as sent: once the body is buffered, HttpClient reports its length either way.
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        var length = response.Content.Headers.ContentLength;
        var chunked = response.Headers.TransferEncodingChunked;
        return (await response.Content.ReadAsByteArrayAsync(), length, chunked);
    }
}

/// <summary>
/// One event.from whose reply is about 500 MB (5,000 tasks sharing one 100 KB description), read
/// by a client that takes the bytes as they come. Budget: resident memory grows by less than
/// 100 MB while the reply is encoded and sent, in each protocol.
/// </summary>
[Category("Slow")]
[Explicit("a 500 MB reply per protocol: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class LargeReplyTests
{
    private const int Tasks = 5_000;
    private const long MemoryBudget = 100L << 20;

    [Test]
    public async Task A_reply_of_hundreds_of_megabytes_costs_a_bounded_amount_of_memory()
    {
        var buffered = long.TryParse(Environment.GetEnvironmentVariable("XAPI_REPLY_BUFFER"), out var b) ? b : new ServerOptions().MaxBufferedReplyBytes;
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxBufferedReplyBytes = buffered);
        using var client = await daemon.LoginAsync(RpcDialect.JsonRpcV2);
        var description = new string('d', 100 * 1024);
        var task = ApiSchema.Class("task");
        daemon.Database.Write(tx =>
        {
            for (var i = 0; i < Tasks; i++)
            {
                tx.Create(task, new Dictionary<string, object?> { ["name_label"] = $"big {i}", ["name_description"] = description });
            }
        });
        await daemon.SettledAsync();
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };

        var results = new List<string>();
        var growths = new List<long>();
        foreach (var isXml in new[] { false, true })
        {
            var body = isXml
                ? $"<?xml version=\"1.0\"?><methodCall><methodName>event.from</methodName><params><param><value>{client.Session}</value></param><param><value><array><data><value>task</value></data></array></value></param><param><value></value></param><param><value><double>0</double></value></param></params></methodCall>"
                : $"{{\"jsonrpc\":\"2.0\",\"method\":\"event.from\",\"params\":[\"{client.Session}\",[\"task\"],\"\",0.0],\"id\":1}}";
            GC.Collect();
            var before = Resident();
            var peak = before;
            var watch = Stopwatch.StartNew();
            using var content = new StringContent(body, Encoding.UTF8, isXml ? "text/xml" : "application/json");
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(daemon.Uri, isXml ? "/" : "/jsonrpc")) { Content = content };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            response.EnsureSuccessStatusCode();
            await using var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[64 * 1024];
            long total = 0;
            var tail = new List<byte>();
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                total += n;
                if ((total >> 20) != ((total - n) >> 20))
                {
                    peak = Math.Max(peak, Resident());
                }
                tail.AddRange(buffer.AsSpan(Math.Max(0, n - 64), Math.Min(n, 64)).ToArray());
                if (tail.Count > 128)
                {
                    tail.RemoveRange(0, tail.Count - 128);
                }
            }
            peak = Math.Max(peak, Resident());
            results.Add($"{(isXml ? "XML-RPC" : "JSON-RPC")}: {total / 1048576.0:N0} MiB in {watch.Elapsed.TotalSeconds:0.0} s, " +
                $"resident {before / 1048576.0:N0} → peak {peak / 1048576.0:N0} MiB, ends {Encoding.UTF8.GetString(tail.ToArray()[^20..])}");
            growths.Add(peak - before);
            Assert.That(total, Is.GreaterThan(Tasks * 100L * 1024), "the whole reply arrived");
        }
        TestContext.Out.WriteLine(string.Join("\n", results));
        Assert.That(growths, Is.All.LessThan(MemoryBudget), "resident memory growth while a reply is sent");
    }

    private static long Resident()
    {
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }
}
