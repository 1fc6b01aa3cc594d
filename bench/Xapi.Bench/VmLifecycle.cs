using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Xenops;
using Xapi.Xenops.Memory;
using Xapi.Xenops.Orchestration;
using Xapi.Xenops.Simulator;

/// <summary>
/// VM lifecycle on the simulator (instant guests): VM.start + VM.clean_shutdown cycles per second
/// from 1 and 16 clients; the daemon's own share of one start and shutdown, beside the same
/// orchestration run directly on a bare simulator in this process (the backend's share) and
/// beside a trivial call (the wire's share); and 512 VMs created, started, paused and shut down.
/// </summary>
internal static class VmLifecycle
{
    private const long MiB = 1L << 20;
    private const long VmMemory = 128 * MiB;

    public static async Task RunAsync(double seconds, int fleet)
    {
        await using var bench = await BenchDaemon.StartAsync(configure: o =>
        {
            o.SimulatedGuestAgentDelay = TimeSpan.Zero;
            o.SimulatedShutdownDelay = TimeSpan.Zero;
            // Room for the whole fleet at once.
            o.SimulatedHostMemory = (fleet + 16) * (VmMemory + (16 * MiB)) + (2L << 30);
        });
        var daemon = bench.Host;
        Console.WriteLine($"simulator with instant guests, {Environment.ProcessorCount} cores, loopback XML-RPC");

        // Warm-up: the JIT tiers up over the first seconds.
        await CyclesAsync(daemon.HttpUri, 4, TimeSpan.FromSeconds(2));
        foreach (var clients in new[] { 1, 16 })
        {
            var (cycles, elapsed) = await CyclesAsync(daemon.HttpUri, clients, TimeSpan.FromSeconds(seconds));
            Console.WriteLine($"VM.start + VM.clean_shutdown, {clients,2} clients: {cycles / elapsed.TotalSeconds,8:N1} cycles/s ({cycles} in {elapsed.TotalSeconds:F1} s)");
        }

        await OverheadAsync(daemon.HttpUri);
        await FleetAsync(daemon.HttpUri, fleet);
    }

    private static async Task<XenApiClient> LoginAsync(Uri uri)
    {
        var client = new XenApiClient(uri);
        await client.LoginAsync("root", BenchDaemon.Password);
        return client;
    }

    private static async Task<string> CreateAsync(XenApiClient client, string name)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        record["memory_static_min"] = record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = VmMemory.ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        record["actions_after_shutdown"] = "destroy";
        record["actions_after_reboot"] = "restart";
        record["actions_after_crash"] = "destroy";
        return (string)(await client.InvokeAsync("VM.create", record))!;
    }

    private static async Task<(long Cycles, TimeSpan Elapsed)> CyclesAsync(Uri uri, int clients, TimeSpan duration)
    {
        var cycles = 0L;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            using var client = await LoginAsync(uri);
            var vm = await CreateAsync(client, $"cycle {c}");
            while (clock.Elapsed < duration)
            {
                await client.InvokeAsync("VM.start", vm, false, false);
                await client.InvokeAsync("VM.clean_shutdown", vm);
                Interlocked.Increment(ref cycles);
            }
            await client.InvokeAsync("VM.destroy", vm);
        })));
        return (cycles, clock.Elapsed);
    }

    /// <summary>One client, one VM: the same start and clean shutdown through the daemon and straight on a simulator.</summary>
    private static async Task OverheadAsync(Uri uri)
    {
        const int Rounds = 300;
        using var client = await LoginAsync(uri);
        var vm = await CreateAsync(client, "overhead");
        var daemonStart = new List<double>();
        var daemonStop = new List<double>();
        var trivial = new List<double>();
        for (var i = 0; i < Rounds; i++)
        {
            var t = Stopwatch.GetTimestamp();
            await client.InvokeAsync("VM.start", vm, false, false);
            daemonStart.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp();
            await client.InvokeAsync("VM.clean_shutdown", vm);
            daemonStop.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp();
            await client.InvokeAsync("VM.get_power_state", vm);
            trivial.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
        }

        using var simulator = new SimulatorBackend(new SimulatorOptions { GuestAgentDelay = TimeSpan.Zero, ShutdownAckDelay = TimeSpan.Zero }, new ManualClock());
        await using var watcher = new DomainWatcher(simulator, new NoSink(), Microsoft.Extensions.Logging.Abstractions.NullLogger<DomainWatcher>.Instance);
        watcher.Start();
        var orchestrator = new VmOrchestrator(simulator, watcher);
        var config = new DomainConfig { Uuid = Guid.NewGuid(), Name = "overhead", Type = Xapi.Xenops.DomainType.Pv, Memory = MemoryRange.Fixed(VmMemory) };
        var backendStart = new List<double>();
        var backendStop = new List<double>();
        for (var i = 0; i < Rounds; i++)
        {
            var t = Stopwatch.GetTimestamp();
            await orchestrator.StartAsync(config, paused: false, progress: null, CancellationToken.None);
            backendStart.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp();
            await orchestrator.ShutdownAsync(config.Uuid, clean: true, TimeSpan.FromSeconds(10), CancellationToken.None);
            backendStop.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
        }

        double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
        Console.WriteLine($"one VM, {Rounds} rounds, medians (µs):   daemon   backend   daemon-side   trivial call");
        Console.WriteLine($"  VM.start                          {Median(daemonStart),8:N0} {Median(backendStart),9:N0} {Median(daemonStart) - Median(backendStart),13:N0} {Median(trivial),14:N0}");
        Console.WriteLine($"  VM.clean_shutdown                 {Median(daemonStop),8:N0} {Median(backendStop),9:N0} {Median(daemonStop) - Median(backendStop),13:N0} {Median(trivial),14:N0}");
        await client.InvokeAsync("VM.destroy", vm);
    }

    /// <summary>The real server's published exercise: VMs created, started, paused and shut down, 16 clients at a time.</summary>
    private static async Task FleetAsync(Uri uri, int fleet)
    {
        const int Clients = 16;
        var phases = new Dictionary<string, TimeSpan>();
        var vms = new string[fleet];
        using var clients = new DisposableList(await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => LoginAsync(uri))));
        async Task PhaseAsync(string name, Func<XenApiClient, int, Task> step)
        {
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
            {
                for (var i = c; i < fleet; i += Clients)
                {
                    await step(clients.Items[c], i);
                }
            })));
            phases[name] = clock.Elapsed;
        }

        var total = Stopwatch.StartNew();
        await PhaseAsync("create", async (client, i) => vms[i] = await CreateAsync(client, $"fleet {i}"));
        await PhaseAsync("start", (client, i) => client.InvokeAsync("VM.start", vms[i], false, false));
        await PhaseAsync("pause", (client, i) => client.InvokeAsync("VM.pause", vms[i]));
        await PhaseAsync("shutdown", (client, i) => client.InvokeAsync("VM.hard_shutdown", vms[i]));
        Console.WriteLine($"{fleet} VMs by {Clients} clients: {total.Elapsed.TotalSeconds:F1} s in all ("
            + string.Join(", ", phases.Select(p => $"{p.Key} {p.Value.TotalSeconds:F1} s")) + "); the real server's published figure: 989 s");
    }

    private sealed class NoSink : IDomainEventSink
    {
        public ValueTask OnEventAsync(DomainEvent domainEvent, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask ResynchroniseAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }

    private sealed class DisposableList(XenApiClient[] items) : IDisposable
    {
        public XenApiClient[] Items => items;

        public void Dispose()
        {
            foreach (var item in items)
            {
                item.Dispose();
            }
        }
    }
}
