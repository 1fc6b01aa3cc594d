using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xapi.Model;
using Xapi.Protocol;

/// <summary>
/// VM.start in a pool of two daemons (127.0.0.2 master, 127.0.0.3 member, one port, the journal
/// backend): called at the master for a VM started on the master itself, and for one started on
/// the member (the call forwarded there, the member's writes committed by the master). Cycles of
/// VM.start_on + VM.hard_shutdown alternate between the two, so both see the same machine; the
/// ratio of the medians is the cost of forwarding.
/// </summary>
internal static class PoolForwarding
{
    private const long MiB = 1L << 20;

    public static async Task RunAsync(int cycles)
    {
        var port = FreePortOnBoth();
        await using var master = await BenchDaemon.StartAsync("journal", configure: o => Place(o, 2, port));
        await using var member = await BenchDaemon.StartAsync("journal", configure: o => Place(o, 3, port));
        using (var joining = new XenApiClient(member.Host.HttpUri))
        {
            await joining.LoginAsync("root", BenchDaemon.Password);
            await joining.InvokeAsync("pool.join", "127.0.0.2", "root", BenchDaemon.Password);
        }
        using var client = new XenApiClient(master.Host.HttpUri);
        await client.LoginAsync("root", BenchDaemon.Password);
        var hosts = master.Host.Database.Snapshot.All<HostRecord>().ToDictionary(h => h.Address, h => h.Ref.Value);
        var here = await VmAsync(client, "local");
        var there = await VmAsync(client, "forwarded");
        Console.WriteLine($"pool of 2 on 127.0.0.2/127.0.0.3:{port}, journal backend, simulator, {Environment.ProcessorCount} cores");

        for (var i = 0; i < 5; i++)
        {
            await CycleAsync(client, here, hosts["127.0.0.2"]);
            await CycleAsync(client, there, hosts["127.0.0.3"]);
        }
        var local = new List<double>();
        var forwarded = new List<double>();
        for (var i = 0; i < cycles; i++)
        {
            local.Add(await CycleAsync(client, here, hosts["127.0.0.2"]));
            forwarded.Add(await CycleAsync(client, there, hosts["127.0.0.3"]));
        }
        var localMedian = Median(local);
        var forwardedMedian = Median(forwarded);
        Console.WriteLine($"VM.start_on at the master, VM on the master:  median {localMedian:F2} ms, p90 {Percentile(local, 0.9):F2} ms ({cycles} starts)");
        Console.WriteLine($"VM.start_on at the master, VM on the member:  median {forwardedMedian:F2} ms, p90 {Percentile(forwarded, 0.9):F2} ms ({cycles} starts)");
        Console.WriteLine($"forwarded / local: {forwardedMedian / localMedian:F2}");
    }

    private static void Place(Xapi.Server.Hosting.ServerOptions options, int octet, int port)
    {
        options.ListenAddress = $"127.0.0.{octet}";
        options.HttpPort = port;
        options.NbdPort = -1;
        options.SimulatedGuestAgentDelay = TimeSpan.Zero;
        options.SimulatedShutdownDelay = TimeSpan.Zero;
    }

    private static async Task<string> VmAsync(XenApiClient client, string name)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        record["memory_static_min"] = record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (128 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        return (string)(await client.InvokeAsync("VM.create", record))!;
    }

    /// <summary>One start (timed) and one hard shutdown; milliseconds of the start.</summary>
    private static async Task<double> CycleAsync(XenApiClient client, string vm, string host)
    {
        var clock = Stopwatch.StartNew();
        await client.InvokeAsync("VM.start_on", vm, host, false, false);
        var started = clock.Elapsed.TotalMilliseconds;
        await client.InvokeAsync("VM.hard_shutdown", vm);
        return started;
    }

    internal static double Median(List<double> values) => Percentile(values, 0.5);

    private static double Percentile(List<double> values, double fraction)
    {
        var sorted = values.Order().ToList();
        return sorted[(int)Math.Min(sorted.Count - 1, Math.Floor(fraction * sorted.Count))];
    }

    internal static int FreePortOnBoth()
    {
        for (var attempt = 0; attempt < 20; attempt++)
        {
            using var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            first.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
            var port = ((IPEndPoint)first.LocalEndPoint!).Port;
            using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                second.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.3"), port));
                return port;
            }
            catch (SocketException)
            {
            }
        }
        throw new InvalidOperationException("no port free on both 127.0.0.2 and 127.0.0.3");
    }
}
