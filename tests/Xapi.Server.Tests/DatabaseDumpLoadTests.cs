using System.Net.Sockets;
using System.Text;

namespace Xapi.Server.Tests;

/// <summary>
/// A 300 MB chunked upload to <c>PUT /pool/xmldbdump</c>, over a raw socket so the test sees
/// exactly how much it sent before the daemon answered. Budget: the daemon refuses it once the
/// default limit (<see cref="ServerOptions.MaxDumpBytes"/>, 128 MiB) is passed, so the client
/// gets well under 300 MB out, and the process's working set grows by less than 32 MiB on the
/// way (a chunked upload is spooled to a file, not held in memory). It once grew by 1 GB.
/// </summary>
[Category("Load")]
[Category("Slow")]
[Explicit("streams 128+ MiB over loopback: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class DatabaseDumpLoadTests
{
    private const long UploadBytes = 300_000_000;
    private const long WorkingSetBudget = 32L << 20;

    [Test]
    public async Task A_300_MB_chunked_dump_is_refused_at_the_limit_with_memory_bounded()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var limit = new ServerOptions().MaxDumpBytes;

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var baseline = Environment.WorkingSet;
        long peak = baseline;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peak = Math.Max(peak, Environment.WorkingSet);
                await Task.Delay(5);
            }
        });

        using var tcp = new TcpClient();
        await tcp.ConnectAsync(daemon.Uri.Host, daemon.Uri.Port);
        var stream = tcp.GetStream();
        var head = $"PUT /pool/xmldbdump?session_id={client.Session} HTTP/1.1\r\nHost: {daemon.Uri.Authority}\r\nTransfer-Encoding: chunked\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        var reply = ReadReplyAsync(stream);

        var chunk = Encoding.ASCII.GetBytes($"{1 << 16:x}\r\n").Concat(new byte[1 << 16]).Concat("\r\n"u8.ToArray()).ToArray();
        long sent = 0;
        try
        {
            while (sent < UploadBytes && !reply.IsCompleted)
            {
                await stream.WriteAsync(chunk);
                sent += 1 << 16;
            }
            if (sent >= UploadBytes)
            {
                await stream.WriteAsync("0\r\n\r\n"u8.ToArray());
            }
        }
        catch (IOException)
        {
            // The daemon closed the connection after its answer: what a refusal looks like.
        }
        var status = await reply.WaitAsync(TimeSpan.FromSeconds(30));
        await sampling.CancelAsync();
        await sampler;
        var growth = peak - baseline;
        TestContext.Out.WriteLine($"sent {sent >> 20} MiB before the answer; working set {baseline >> 20} MiB, peak growth {growth >> 20} MiB (budget {WorkingSetBudget >> 20} MiB)");

        Assert.Multiple(async () =>
        {
            Assert.That(status, Does.StartWith("HTTP/1.1 413"));
            Assert.That(sent, Is.LessThan(limit + (32L << 20)), "refused once the limit is passed, not after the whole body");
            Assert.That(growth, Is.LessThan(WorkingSetBudget), "working-set growth");
            Assert.That(await client.InvokeAsync("pool.get_all"), Has.Count.EqualTo(1), "the daemon still serves");
        });
    }

    private static async Task<string> ReadReplyAsync(NetworkStream stream)
    {
        var buffer = new byte[4096];
        var read = await stream.ReadAsync(buffer);
        return Encoding.ASCII.GetString(buffer, 0, read);
    }
}
