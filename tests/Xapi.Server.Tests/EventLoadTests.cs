using System.Collections.Concurrent;
using System.Diagnostics;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>
/// 200 clients blocked in event.from while 20 writers create objects on loopback: every
/// acknowledged write reaches every subscriber exactly once, nothing fails, memory stays bounded.
/// Each write creates its own object (an alert), so every write is a distinct event even though
/// event.from reports only the latest state of an object that changed twice.
/// </summary>
[Category("Load")]
[Category("Slow")]
[Explicit("30 s of load: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class EventLoadTests
{
    private const int Subscribers = 200;
    private const int Writers = 20;
    private const int WritesPerWriterPerSecond = 10;

    [Test]
    public async Task Every_write_reaches_every_subscriber_once()
    {
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("XAPI_LOAD_SECONDS"), out var s) ? s : 30;
        await using var daemon = await TestDaemon.StartAsync();
        using var http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = TimeSpan.FromMinutes(5) };
        var errors = new ConcurrentQueue<string>();

        using var setup = await daemon.LoginAsync(RpcDialect.JsonRpcV2);
        var pool = ((IReadOnlyList<object?>)(await setup.InvokeAsync("pool.get_all"))!)[0];
        var poolUuid = (string)(await setup.InvokeAsync("pool.get_uuid", pool))!;

        var subscribers = new List<(XenApiClient Client, string Token)>();
        for (var i = 0; i < Subscribers; i++)
        {
            var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", TestDaemon.Password);
            subscribers.Add((client, (await client.FromAsync(["message"], "", 0)).Token));
        }
        GC.Collect();
        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);

        // Writes are numbered writer * slots + seq (the alert's body says which); bitsets keep the
        // test's own bookkeeping small so the heap figure is the server's.
        var slots = seconds * WritesPerWriterPerSecond * 2;
        var acknowledged = new bool[Writers * slots];
        var acknowledgedCount = 0;
        var writersDone = new TaskCompletionSource();
        var seen = new System.Collections.BitArray[Subscribers];
        var duplicates = new int[Subscribers];
        var polls = new long[Subscribers];
        var watch = Stopwatch.StartNew();

        var readers = subscribers.Select((subscriber, index) => Task.Run(async () =>
        {
            var mine = seen[index] = new System.Collections.BitArray(Writers * slots);
            var seenCount = 0;
            var token = subscriber.Token;
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(seconds + 90));
            try
            {
                while (!(writersDone.Task.IsCompleted && seenCount >= Volatile.Read(ref acknowledgedCount)))
                {
                    deadline.Token.ThrowIfCancellationRequested();
                    var batch = await subscriber.Client.FromAsync(["message"], token, 5.0);
                    polls[index]++;
                    token = batch.Token;
                    foreach (var e in batch.Events.Where(e => (string)e["operation"]! == "add"))
                    {
                        var body = (string)((IReadOnlyDictionary<string, object?>)e["snapshot"]!)["body"]!;
                        var dash = body.IndexOf('-');
                        var slot = int.Parse(body[..dash]) * slots + int.Parse(body[(dash + 1)..]);
                        if (mine[slot])
                        {
                            Interlocked.Increment(ref duplicates[index]);
                        }
                        else
                        {
                            mine[slot] = true;
                            seenCount++;
                        }
                    }
                }
            }
            catch (Exception e)
            {
                errors.Enqueue($"subscriber {index}: {e.Message}");
            }
        })).ToList();

        var writers = Enumerable.Range(0, Writers).Select(writer => Task.Run(async () =>
        {
            using var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", TestDaemon.Password);
            using var pace = new PeriodicTimer(TimeSpan.FromSeconds(1.0 / WritesPerWriterPerSecond));
            for (var seq = 0; watch.Elapsed < TimeSpan.FromSeconds(seconds) && seq < slots; seq++)
            {
                try
                {
                    await client.InvokeAsync("message.create", "LOAD_TEST", 1L, "Pool", poolUuid, $"{writer}-{seq}");
                    acknowledged[writer * slots + seq] = true;
                    Interlocked.Increment(ref acknowledgedCount);
                }
                catch (Exception e)
                {
                    errors.Enqueue($"writer {writer}: {e.Message}");
                }
                await pace.WaitForNextTickAsync();
            }
        })).ToList();

        await Task.WhenAll(writers);
        var writeTime = watch.Elapsed;
        writersDone.SetResult();
        await Task.WhenAll(readers);
        var drainTime = watch.Elapsed - writeTime;

        GC.Collect();
        var memoryAfter = GC.GetTotalMemory(forceFullCollection: true);
        var missing = seen.Select(m => Enumerable.Range(0, acknowledged.Length).Count(i => acknowledged[i] && !m[i])).ToArray();
        TestContext.Out.WriteLine(
            $"{acknowledgedCount:N0} writes in {writeTime.TotalSeconds:0.0} s by {Writers} writers; {Subscribers} subscribers drained {drainTime.TotalSeconds:0.0} s later; " +
            $"{polls.Sum():N0} event.from calls; {acknowledgedCount * (long)Subscribers:N0} deliveries; missing {missing.Sum()}, duplicates {duplicates.Sum()}, errors {errors.Count}; " +
            $"managed heap {memoryBefore / 1048576.0:0.0} → {memoryAfter / 1048576.0:0.0} MiB");
        foreach (var error in errors.Take(5))
        {
            TestContext.Out.WriteLine(error);
        }
        Assert.Multiple(() =>
        {
            Assert.That(errors, Is.Empty);
            Assert.That(acknowledgedCount, Is.GreaterThan(seconds * Writers * WritesPerWriterPerSecond / 2), "the writers kept writing");
            Assert.That(missing.Sum(), Is.Zero, "every acknowledged write reached every subscriber");
            Assert.That(duplicates.Sum(), Is.Zero, "no subscriber saw a write twice");
            Assert.That(memoryAfter - memoryBefore, Is.LessThan(64L * 1024 * 1024), "memory stays bounded");
        });
        foreach (var (client, _) in subscribers)
        {
            client.Dispose();
        }
    }
}
