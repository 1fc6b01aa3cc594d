using Microsoft.Extensions.DependencyInjection;
using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Pool;

/// <summary>
/// VM.pool_migrate of a running VM of 1 GiB simulated memory between two daemons (127.0.0.2
/// master, 127.0.0.3 member, one port, journal backend) on a shared ext SR, its guest writing its
/// memory at each stated rate within a 64 MiB working set. Each migration's downtime (guest paused
/// on the sender until it runs on the receiver) and duration come from the sending host; the
/// baseline in the same run is the duration itself, which is the downtime a stop-and-copy
/// migration (suspend, copy, resume) of the same VM would have.
/// </summary>
internal static class PoolMigration
{
    private const long MiB = 1L << 20;

    public static async Task RunAsync(int migrations, IReadOnlyList<long> ratesMiBPerSecond)
    {
        Console.WriteLine($"VM of 1 GiB, journal backend, simulator, {Environment.ProcessorCount} cores, {migrations} migrations per rate, alternating between the hosts");
        foreach (var rate in ratesMiBPerSecond)
        {
            await RunRateAsync(migrations, rate);
        }
    }

    private static async Task RunRateAsync(int migrations, long rateMiB)
    {
        var port = PoolForwarding.FreePortOnBoth();
        await using var master = await BenchDaemon.StartAsync("journal", configure: o => Place(o, 2, port, rateMiB));
        await using var member = await BenchDaemon.StartAsync("journal", configure: o => Place(o, 3, port, rateMiB));
        using (var joining = new XenApiClient(member.Host.HttpUri))
        {
            await joining.LoginAsync("root", BenchDaemon.Password);
            await joining.InvokeAsync("pool.join", "127.0.0.2", "root", BenchDaemon.Password);
        }
        var shared = Directory.CreateTempSubdirectory("xapi-bench-shared-");
        try
        {
            using var client = new XenApiClient(master.Host.HttpUri);
            await client.LoginAsync("root", BenchDaemon.Password);
            var hosts = master.Host.Database.Snapshot.All<HostRecord>().OrderBy(h => h.Address, StringComparer.Ordinal).Select(h => h.Ref.Value).ToList();
            var sr = (string)(await client.InvokeAsync("SR.create", hosts[0], new Dictionary<string, object?> { ["location"] = shared.FullName },
                "0", "shared", "", "ext", "user", true, new Dictionary<string, object?>()))!;
            var vm = await VmAsync(client, sr);
            await client.InvokeAsync("VM.start_on", vm, hosts[0], false, false);
            var outcomes = new List<MigrationOutcome>();
            void Record(Guid _, MigrationOutcome outcome)
            {
                lock (outcomes)
                {
                    outcomes.Add(outcome);
                }
            }
            master.Host.Services.GetRequiredService<LiveMigration>().Completed += Record;
            member.Host.Services.GetRequiredService<LiveMigration>().Completed += Record;
            var clock = new Stopwatch();
            var calls = new List<double>();
            for (var i = 0; i < migrations; i++)
            {
                clock.Restart();
                await client.InvokeAsync("VM.pool_migrate", vm, hosts[(i + 1) % 2], new Dictionary<string, object?> { ["live"] = "true" });
                calls.Add(clock.Elapsed.TotalMilliseconds);
            }
            var downtime = outcomes.Select(o => o.Downtime.TotalMilliseconds).ToList();
            var duration = outcomes.Select(o => o.Duration.TotalMilliseconds).ToList();
            var median = PoolForwarding.Median(downtime);
            var whole = PoolForwarding.Median(duration);
            Console.WriteLine($"guest writing {rateMiB} MiB/s: downtime median {median:F1} ms (max {downtime.Max():F1}), duration median {whole:F0} ms, "
                + $"VM.pool_migrate call median {PoolForwarding.Median(calls):F0} ms; rounds {string.Join(" ", outcomes.Select(o => o.PagesPerRound.Count))}; "
                + $"last round pages {string.Join(" ", outcomes.Select(o => o.PagesPerRound[^1]))}; sent {outcomes.Average(o => o.BytesSent) / MiB:F0} MiB");
            Console.WriteLine($"  downtime / stop-and-copy downtime (the duration): {median / whole:F4}");
            await client.InvokeAsync("VM.hard_shutdown", vm);
        }
        finally
        {
            shared.Delete(recursive: true);
        }
    }

    private static void Place(Xapi.Server.Hosting.ServerOptions options, int octet, int port, long rateMiB)
    {
        options.ListenAddress = $"127.0.0.{octet}";
        options.HttpPort = port;
        options.NbdPort = -1;
        options.SimulatedGuestAgentDelay = TimeSpan.Zero;
        options.SimulatedShutdownDelay = TimeSpan.Zero;
        options.SimulatedDirtyRate = rateMiB * MiB;
    }

    private static async Task<string> VmAsync(XenApiClient client, string sr)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "migrating";
        record["memory_static_min"] = record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (1024 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        var disk = ApiSchema.Class("VDI").MinimalRecord();
        disk["name_label"] = "migrating disk";
        disk["SR"] = sr;
        disk["virtual_size"] = (64 * MiB).ToString();
        var vdi = (string)(await client.InvokeAsync("VDI.create", disk))!;
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = vdi;
        vbd["userdevice"] = "0";
        vbd["type"] = "Disk";
        vbd["mode"] = "RW";
        await client.InvokeAsync("VBD.create", vbd);
        return vm;
    }
}
