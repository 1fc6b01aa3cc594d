using System.Diagnostics;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The density XCP hosts are known for: 200 VMs with dynamic memory ranges started on one
/// simulated host that cannot hold them all at their maximum, by 20 clients at once. The host
/// squeezes the guests toward their minimum instead of refusing, and gives every byte back.
/// </summary>
[Explicit("slow: 200 VMs")]
[Category("Slow")]
public class VmDensityTests
{
    private const int Clients = 20;
    private const int VmsPerClient = 10;
    private const long MiB = 1L << 20;

    // 200 guests need 25 GiB at dynamic_min and 100 GiB at dynamic_max: only squeezing fits them in 32 GiB.
    private const long HostMemory = 32L << 30;
    private const long DynamicMin = 128 * MiB;
    private const long DynamicMax = 512 * MiB;

    // The whole run, creation included, on a 2-core machine.
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(90);

    [Test]
    public async Task Two_hundred_VMs_started_by_twenty_clients_fit_by_squeezing_and_give_all_memory_back()
    {
        await using var daemon = await TestDaemon.StartAsync(o =>
        {
            o.SimulatedHostMemory = HostMemory;
            o.SimulatedGuestAgentDelay = TimeSpan.Zero;
            o.SimulatedShutdownDelay = TimeSpan.FromMilliseconds(10);
            o.MaxSessionsPerOriginator = 1000;
        });
        using var observer = await daemon.LoginAsync();
        var hypervisor = daemon.Service<Xapi.Xenops.IHypervisor>();
        var freeAtStart = (await hypervisor.GetHostMemoryAsync()).Free;
        var clock = Stopwatch.StartNew();

        var clients = new List<XenApiClient>();
        for (var i = 0; i < Clients; i++)
        {
            clients.Add(await daemon.LoginAsync());
        }
        var vms = await Task.WhenAll(clients.Select((client, c) => Task.Run(async () =>
        {
            var mine = new List<string>();
            for (var i = 0; i < VmsPerClient; i++)
            {
                var vm = await client.CreateVmAsync($"dense {c}-{i}", r =>
                {
                    r["memory_static_min"] = (64 * MiB).ToString();
                    r["memory_dynamic_min"] = DynamicMin.ToString();
                    r["memory_dynamic_max"] = DynamicMax.ToString();
                    r["memory_static_max"] = DynamicMax.ToString();
                }, withDevices: false);
                await client.InvokeAsync("VM.start", vm, false, false);
                mine.Add(vm);
            }
            return mine;
        })));
        var all = vms.SelectMany(v => v).ToList();

        // Squeezing a running guest reaches its record through the backend's events: follow them
        // until every target the backend set shows (each start squeezes all the others).
        var mine = all.ToHashSet();
        var token = "";
        List<long> targets;
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (true)
            {
                var records = ((IReadOnlyDictionary<string, object?>)(await observer.InvokeAsync("VM.get_all_records"))!)
                    .Where(r => mine.Contains(r.Key)).Select(r => (IReadOnlyDictionary<string, object?>)r.Value!).ToList();
                Assert.That(records.Select(r => r["power_state"]), Is.All.EqualTo("Running"));
                targets = records.Select(r => Convert.ToInt64(r["memory_target"])).ToList();
                var backend = 0L;
                foreach (var uuid in records.Select(r => Guid.Parse((string)r["uuid"]!)))
                {
                    backend += (await hypervisor.GetStatsAsync(uuid)).MemoryTarget;
                }
                TestContext.Out.WriteLine($"records {targets.Sum() / MiB} MiB, backend {backend / MiB} MiB");
                if (targets.Sum() == backend)
                {
                    break;
                }
                deadline.Token.ThrowIfCancellationRequested();
                token = (await observer.FromAsync(["VM"], token, 5)).Token;
            }
        }
        Assert.That(targets, Is.All.InRange(DynamicMin, DynamicMax));
        Assert.That(targets.Count(t => t < DynamicMax), Is.GreaterThan(all.Count / 2), "most guests were squeezed below their maximum");
        Assert.That(targets.Sum(), Is.LessThanOrEqualTo(HostMemory), "the guests' targets fit in the host");

        await Task.WhenAll(clients.Select((client, c) => Task.Run(async () =>
        {
            foreach (var vm in vms[c])
            {
                await client.InvokeAsync("VM.shutdown", vm);
            }
        })));
        foreach (var vm in all)
        {
            Assert.That(await observer.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
        }
        Assert.That((await hypervisor.GetHostMemoryAsync()).Free, Is.EqualTo(freeAtStart));
        TestContext.Out.WriteLine($"{all.Count} VMs created, started and shut down by {Clients} clients in {clock.Elapsed.TotalSeconds:F1} s; "
            + $"targets {targets.Min() / MiB}..{targets.Max() / MiB} MiB");
        Assert.That(clock.Elapsed, Is.LessThan(Budget));
        foreach (var client in clients)
        {
            client.Dispose();
        }
    }
}
