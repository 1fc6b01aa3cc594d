using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Hosting;

/// <summary>
/// How soon a client blocked in event.from learns of a write: the time from the write's reply
/// to the event.from reply carrying it, beside the round trip of a trivial call in the same run.
/// </summary>
internal static class EventLatency
{
    public static async Task RunAsync(int writes, string database)
    {
        await using var bench = await BenchDaemon.StartAsync(database);
        var daemon = bench.Host;
        using var writer = new XenApiClient(daemon.HttpUri, RpcDialect.JsonRpcV2);
        using var watcher = new XenApiClient(daemon.HttpUri, RpcDialect.JsonRpcV2);
        await writer.LoginAsync("root", BenchDaemon.Password);
        await watcher.LoginAsync("root", BenchDaemon.Password);
        var vm = daemon.Database.Snapshot.All(ApiSchema.Class("VM")).First().Ref;

        // The trivial call: a field read, the cheapest XenAPI round trip with a session.
        var trivial = new List<double>(writes);
        for (var i = 0; i < writes + 1000; i++)
        {
            var start = Stopwatch.GetTimestamp();
            await writer.InvokeAsync("VM.get_name_label", vm);
            if (i >= 1000)
            {
                trivial.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
        }

        var subscription = new[] { $"VM/{vm}" };
        var token = (string)((IReadOnlyDictionary<string, object?>)(await watcher.InvokeAsync("event.from", subscription, "", 0.0))!)["token"]!;
        var arrivals = new long[writes + 1000];
        var delivered = new SemaphoreSlim(0);
        var watching = Task.Run(async () =>
        {
            var expected = 0;
            while (expected < arrivals.Length)
            {
                var batch = (IReadOnlyDictionary<string, object?>)(await watcher.InvokeAsync("event.from", subscription, token, 30.0))!;
                var now = Stopwatch.GetTimestamp();
                token = (string)batch["token"]!;
                foreach (var e in ((IReadOnlyList<object?>)batch["events"]!).Cast<IReadOnlyDictionary<string, object?>>())
                {
                    var label = (string)((IReadOnlyDictionary<string, object?>)e["snapshot"]!)["name_label"]!;
                    if (label == $"latency-{expected}")
                    {
                        arrivals[expected++] = now;
                        delivered.Release();
                    }
                }
            }
        });

        var replies = new long[arrivals.Length];
        for (var i = 0; i < arrivals.Length; i++)
        {
            await writer.InvokeAsync("VM.set_name_label", vm, $"latency-{i}");
            replies[i] = Stopwatch.GetTimestamp();
            await delivered.WaitAsync();
        }
        await watching;

        // The first thousand warm the JIT and are not counted.
        var latency = Enumerable.Range(1000, writes)
            .Select(i => Math.Max(0, Stopwatch.GetElapsedTime(replies[i], arrivals[i]).TotalMilliseconds))
            .ToList();
        Console.WriteLine($"loopback, JSON-RPC, {database} database, {writes:N0} writes, {Environment.ProcessorCount} cores");
        Console.WriteLine($"{"",-42} {"p50 ms",8} {"p99 ms",8} {"max ms",8}");
        Print("trivial call round trip (VM.get_name_label)", trivial);
        Print("write reply -> blocked event.from returns", latency);
    }

    private static void Print(string name, List<double> samples)
    {
        samples.Sort();
        double At(double q) => samples[Math.Min(samples.Count - 1, (int)(q * samples.Count))];
        Console.WriteLine($"{name,-42} {At(0.50),8:0.000} {At(0.99),8:0.000} {samples[^1],8:0.000}");
    }
}
