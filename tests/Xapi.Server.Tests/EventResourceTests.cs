using System.Collections.Concurrent;
using System.Diagnostics;
using Xapi.Protocol;
using Xapi.Server.Events;

namespace Xapi.Server.Tests;

/// <summary>
/// Blocked event.from callers cost memory and CPU per caller, not per write: 500 of them, waiting
/// on a class nobody writes, while writers commit 2,000 writes/s for 30 s.
/// Budget: resident memory grows by less than 100 MB; the write rate stays within 20 % of the
/// same load with no waiters, measured first in the same test.
/// </summary>
[Category("Load")]
[Category("Slow")]
[Explicit("45 s of load: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class EventResourceTests
{
    private const int Waiters = 500;
    private const int Writers = 32;
    private const double WritesPerSecond = 2_000;
    private const long MemoryBudget = 100L << 20;

    [Test]
    public async Task Five_hundred_blocked_callers_cost_neither_memory_nor_write_rate()
    {
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("XAPI_LOAD_SECONDS"), out var s) ? s : 30;
        // 532 root sessions of one originator: past the real cap of 500, which would log the idle writers out.
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxSessionsPerOriginator = Waiters + Writers);
        var hub = daemon.Service<EventHub>();
        using var http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = Timeout.InfiniteTimeSpan };
        var errors = new ConcurrentQueue<string>();

        var writers = new List<(XenApiClient Client, string Vm)>();
        for (var i = 0; i < Writers; i++)
        {
            var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", TestDaemon.Password);
            writers.Add((client, await client.CreateVmAsync($"written {i}")));
        }
        await WriteAsync(writers, TimeSpan.FromSeconds(2), errors);
        var baseline = await WriteAsync(writers, TimeSpan.FromSeconds(Math.Max(5, seconds / 3)), errors);

        using var stop = new CancellationTokenSource();
        var waiters = new List<Task>();
        for (var i = 0; i < Waiters; i++)
        {
            var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", TestDaemon.Password);
            var token = (await client.FromAsync(["SR"], "", 0)).Token;
            waiters.Add(Task.Run(async () =>
            {
                using var _ = client;
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        var batch = (IReadOnlyDictionary<string, object?>)(await client.CallAsync("event.from", [client.Session, new[] { "SR" }, token, 3600.0], stop.Token))!;
                        token = (string)batch["token"]!;
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
                catch (Exception e)
                {
                    errors.Enqueue($"waiter: {e.Message}");
                }
            }));
        }
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (hub.WaiterCount < Waiters && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        var blocked = hub.WaiterCount;

        GC.Collect();
        var residentBefore = Resident();
        long residentPeak = residentBefore;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                residentPeak = Math.Max(residentPeak, Resident());
                await Task.Delay(250);
            }
        });
        var loaded = await WriteAsync(writers, TimeSpan.FromSeconds(seconds), errors);
        await sampling.CancelAsync();
        await sampler;
        GC.Collect();
        var residentAfter = Resident();
        var stillBlocked = hub.WaiterCount;

        await stop.CancelAsync();
        await Task.WhenAll(waiters);
        writers.ForEach(w => w.Client.Dispose());

        TestContext.Out.WriteLine(
            $"no waiters: {baseline:N0} writes/s; {blocked} blocked callers: {loaded:N0} writes/s ({loaded / baseline:P0}); " +
            $"resident {residentBefore / 1048576.0:N0} → peak {residentPeak / 1048576.0:N0} → {residentAfter / 1048576.0:N0} MiB; still blocked {stillBlocked}; errors {errors.Count}");
        foreach (var error in errors.Take(5))
        {
            TestContext.Out.WriteLine(error);
        }
        Assert.Multiple(() =>
        {
            Assert.That(errors, Is.Empty);
            Assert.That(blocked, Is.EqualTo(Waiters), "every caller was blocked");
            Assert.That(stillBlocked, Is.EqualTo(Waiters), "writes to other classes wake nobody's call");
            Assert.That(residentPeak - residentBefore, Is.LessThan(MemoryBudget), "resident memory growth");
            Assert.That(loaded, Is.GreaterThanOrEqualTo(baseline * 0.8), "write rate against the same load with no waiters");
        });
    }

    private static long Resident()
    {
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }

    // Writers paced together to WritesPerSecond (or as fast as the daemon takes them); returns writes/s.
    private static async Task<double> WriteAsync(List<(XenApiClient Client, string Vm)> writers, TimeSpan duration, ConcurrentQueue<string> errors)
    {
        var watch = Stopwatch.StartNew();
        long issued = 0;
        long done = 0;
        await Task.WhenAll(writers.Select(w => Task.Run(async () =>
        {
            while (true)
            {
                var due = TimeSpan.FromSeconds(Interlocked.Increment(ref issued) / WritesPerSecond);
                if (due >= duration)
                {
                    return;
                }
                var wait = due - watch.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait);
                }
                try
                {
                    await w.Client.InvokeAsync("VM.set_name_description", w.Vm, $"write {due.Ticks}");
                    Interlocked.Increment(ref done);
                }
                catch (Exception e)
                {
                    errors.Enqueue($"writer: {e.Message}");
                }
            }
        })));
        return done / watch.Elapsed.TotalSeconds;
    }
}
