using System.Text.Json;
using System.Text.Json.Serialization;
using Xapi.Xenops.Guest;
using Xapi.Xenops.Memory;
using Xapi.Xenops.Simulator;
using static Xapi.Xenops.Tests.Sim;

namespace Xapi.Xenops.Tests;

public sealed class SimulatorBackendTests
{
    private ManualClock _clock = null!;
    private SimulatorBackend _sim = null!;

    [SetUp]
    public void SetUp() => (_clock, _sim) = New(new SimulatorOptions());

    [TearDown]
    public void TearDown() => _sim.Dispose();

    private static (ManualClock, SimulatorBackend) New(SimulatorOptions options)
    {
        var clock = new ManualClock();
        return (clock, new SimulatorBackend(options, clock));
    }

    [Test]
    public async Task Domids_count_up_from_1_and_are_not_reused()
    {
        var first = await _sim.CreateAsync(Vm(1));
        var second = await _sim.CreateAsync(Vm(2));
        await _sim.DestroyAsync(Id(1));
        var third = await _sim.CreateAsync(Vm(1));

        Assert.That(new[] { first.DomId, second.DomId, third.DomId }, Is.EqualTo(new[] { 1, 2, 3 }));
    }

    [Test]
    public async Task A_domain_that_does_not_fit_is_refused_with_needed_and_available_bytes_and_leaves_no_trace()
    {
        _sim.Dispose();
        (_clock, _sim) = New(new SimulatorOptions { HostMemoryBytes = 4 * GiB, HostOverheadBytes = GiB });
        await StartAsync(_sim, Vm(1));
        await StartAsync(_sim, Vm(2));
        var events = _sim.Subscribe();

        var refusal = await Assert.ThrowsAsync<NotEnoughMemoryException>(async () => await _sim.CreateAsync(Vm(3)));

        // 3 GiB for guests, two domains of 1 GiB + 12 MiB overhead: 1000 MiB left, 72 of them the reserve.
        await Assert.MultipleAsync(async () =>
        {
            Assert.That(refusal!.NeededBytes, Is.EqualTo(1036 * MiB));
            Assert.That(refusal.AvailableBytes, Is.EqualTo(928 * MiB));
            Assert.That(Drain(events), Is.Empty);
            Assert.That(await _sim.ListDomainsAsync(), Has.Count.EqualTo(2));
            Assert.That((await _sim.GetHostMemoryAsync()).Free, Is.EqualTo(1000 * MiB));
        });

        await _sim.DestroyAsync(Id(1));
        Assert.That((await _sim.CreateAsync(Vm(3))).DomId, Is.EqualTo(3), "a refused create takes no domid");
    }

    [Test]
    public async Task A_start_emits_created_built_plugged_and_unpaused_in_order()
    {
        var events = _sim.Subscribe();
        var config = Vm(1) with { Vbds = [new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, null)] };

        var state = await StartAsync(_sim, config);

        var seen = Drain(events);
        Assert.Multiple(() =>
        {
            Assert.That(seen.Select(e => e.Kind), Is.EqualTo(new[]
            {
                DomainEventKind.Created, DomainEventKind.Built, DomainEventKind.DevicePlugged, DomainEventKind.DevicePlugged, DomainEventKind.Unpaused,
            }));
            Assert.That(seen.Select(e => e.Sequence), Is.EqualTo(new long[] { 1, 2, 3, 4, 5 }));
            Assert.That(seen[0].State.PowerState, Is.EqualTo(DomainPowerState.Paused));
            Assert.That(state.PowerState, Is.EqualTo(DomainPowerState.Running));
            Assert.That(state.Vbds.Single().Device, Is.EqualTo("xvda"));
            Assert.That(state.Vifs.Single().Mac, Is.EqualTo("02:00:00:00:00:01"));
            Assert.That(state.ConsoleText, Does.Contain("Booting vm1"));
        });
    }

    [Test]
    public async Task Operations_in_the_wrong_state_are_refused_with_the_state_they_found()
    {
        await _sim.CreateAsync(Vm(1));

        Assert.Multiple(() =>
        {
            Assert.That(
                async () => await _sim.UnpauseAsync(Id(1)),
                Throws.TypeOf<DomainStateException>().With.Property(nameof(DomainStateException.Actual)).EqualTo(DomainPowerState.Paused));
            Assert.That(async () => await _sim.PauseAsync(Id(1)), Throws.TypeOf<DomainStateException>());
            Assert.That(async () => await _sim.BuildAsync(Id(9)), Throws.TypeOf<DomainNotFoundException>());
            Assert.That(async () => await _sim.CreateAsync(Vm(1)), Throws.TypeOf<DomainAlreadyExistsException>());
        });
    }

    [Test]
    public async Task Starting_a_domain_squeezes_running_domains_toward_dynamic_min_before_it_is_created()
    {
        _sim.Dispose();
        (_clock, _sim) = New(new SimulatorOptions { HostMemoryBytes = 8 * GiB, HostOverheadBytes = GiB });
        var first = await StartAsync(_sim, Vm(1, dynamicMin: GiB, dynamicMax: 4 * GiB));
        var events = _sim.Subscribe();

        var second = await _sim.CreateAsync(Vm(2, dynamicMin: GiB, dynamicMax: 4 * GiB));

        var seen = Drain(events);
        var squeezed = (await _sim.TryGetDomainAsync(Id(1)))!;
        await Assert.MultipleAsync(async () =>
        {
            Assert.That(first.MemoryActual, Is.EqualTo(4 * GiB), "alone, a domain gets its dynamic_max");
            Assert.That(seen.Select(e => (e.Kind, e.State.DomId)), Is.EqualTo(new[] { (DomainEventKind.MemoryChanged, 1), (DomainEventKind.Created, 2) }));
            Assert.That(squeezed.MemoryTarget, Is.LessThan(4 * GiB).And.GreaterThanOrEqualTo(GiB));
            Assert.That(squeezed.MemoryActual, Is.EqualTo(squeezed.MemoryTarget));
            Assert.That(second.MemoryActual, Is.GreaterThan(GiB));
            // The squeeze stops when exactly the reserve is left.
            Assert.That((await _sim.GetHostMemoryAsync()).Free, Is.EqualTo(Squeezer.DefaultHostFreeReserveKib * 1024));
        });
    }

    [Test]
    public async Task A_memory_target_moves_memory_actual_at_the_balloon_rate()
    {
        await StartAsync(_sim, Vm(1, dynamicMin: GiB, dynamicMax: 2 * GiB));
        var events = _sim.Subscribe();

        var set = await _sim.SetMemoryTargetAsync(Id(1), GiB);
        _clock.Advance(TimeSpan.FromMilliseconds(500));
        var halfway = (await _sim.TryGetDomainAsync(Id(1)))!;
        _clock.Advance(TimeSpan.FromSeconds(2));
        var done = (await _sim.TryGetDomainAsync(Id(1)))!;

        Assert.Multiple(() =>
        {
            Assert.That((set.MemoryTarget, set.MemoryActual), Is.EqualTo((GiB, 2 * GiB)));
            Assert.That(halfway.MemoryActual, Is.EqualTo(GiB + GiB / 2));
            Assert.That(done.MemoryActual, Is.EqualTo(GiB));
            Assert.That(Drain(events).Select(e => e.State.MemoryActual), Is.EqualTo(new[] { 2 * GiB, GiB + GiB / 2, GiB }));
            Assert.That(async () => await _sim.SetMemoryTargetAsync(Id(1), 3 * GiB), Throws.TypeOf<InvalidDomainRequestException>());
        });
    }

    [Test]
    public async Task The_guest_agent_reports_os_networks_and_drivers_some_time_after_boot()
    {
        await StartAsync(_sim, Vm(1));
        var events = _sim.Subscribe();

        _clock.Advance(TimeSpan.FromSeconds(4.9));
        var early = (await _sim.TryGetDomainAsync(Id(1)))!;
        _clock.Advance(TimeSpan.FromSeconds(0.1));

        var agentEvent = Drain(events).Single(e => e.Kind == DomainEventKind.GuestAgentChanged);
        var metrics = GuestAgentParser.Parse(agentEvent.State.GuestAgent!.Xenstore);
        Assert.Multiple(() =>
        {
            Assert.That(early.GuestAgent, Is.Null);
            Assert.That(agentEvent.State.GuestAgent!.PvDriversDetected, Is.True);
            Assert.That(metrics.OsVersion["distro"], Is.EqualTo("debian"));
            Assert.That(metrics.PvDriversVersion["major"], Is.EqualTo("9"));
            Assert.That(metrics.Networks.Keys, Is.EquivalentTo(new[] { "0/ip", "0/ipv4/0", "0/ipv6/0" }));
            Assert.That(metrics.Networks["0/ip"], Is.EqualTo("10.0.0.2"));
            Assert.That(metrics.Other["feature-balloon"], Is.EqualTo("1"));
        });
    }

    [Test]
    public async Task A_guest_answers_a_shutdown_request_only_once_its_agent_runs_and_then_stops_after_a_delay()
    {
        await StartAsync(_sim, Vm(1));
        var before = await _sim.RequestShutdownAsync(Id(1), ShutdownRequest.Poweroff);
        _clock.Advance(TimeSpan.FromSeconds(5));
        var events = _sim.Subscribe();

        var acknowledged = await _sim.RequestShutdownAsync(Id(1), ShutdownRequest.Poweroff);
        var meanwhile = Drain(events);
        _clock.Advance(TimeSpan.FromSeconds(1));
        var after = Drain(events);

        Assert.Multiple(() =>
        {
            Assert.That(before, Is.False);
            Assert.That(acknowledged, Is.True);
            Assert.That(meanwhile, Is.Empty);
            Assert.That(after.Select(e => (e.Kind, e.State.PowerState, e.State.ShutdownReason)), Is.EqualTo(new[]
            {
                (DomainEventKind.Shutdown, DomainPowerState.Shutdown, (ShutdownReason?)ShutdownReason.Poweroff),
            }));
        });
    }

    [Test]
    public async Task A_shut_down_domain_holds_its_memory_until_destroyed()
    {
        var free = (await _sim.GetHostMemoryAsync()).Free;
        await StartAsync(_sim, Vm(1));
        _sim.TriggerGuestShutdown(Id(1), ShutdownReason.Poweroff);
        var held = (await _sim.GetHostMemoryAsync()).Free;

        await _sim.DestroyAsync(Id(1));

        await Assert.MultipleAsync(async () =>
        {
            Assert.That(held, Is.EqualTo(free - GiB - 12 * MiB));
            Assert.That((await _sim.GetHostMemoryAsync()).Free, Is.EqualTo(free));
            Assert.That(await _sim.ListDomainsAsync(), Is.Empty);
        });
    }

    [TestCase(ShutdownReason.Reboot, "Restarting system")]
    [TestCase(ShutdownReason.Crash, "Kernel panic")]
    [TestCase(ShutdownReason.Halt, "System halted")]
    public async Task A_guest_initiated_stop_is_reported_with_its_reason_and_shows_on_the_console(ShutdownReason reason, string console)
    {
        await StartAsync(_sim, Vm(1));
        var events = _sim.Subscribe();

        _sim.TriggerGuestShutdown(Id(1), reason);

        var stop = Drain(events).Single();
        Assert.Multiple(() =>
        {
            Assert.That(stop.Kind, Is.EqualTo(DomainEventKind.Shutdown));
            Assert.That(stop.State.ShutdownReason, Is.EqualTo(reason));
            Assert.That(stop.State.ConsoleText, Does.Contain(console));
            Assert.That(() => _sim.TriggerGuestShutdown(Id(1), reason), Throws.TypeOf<DomainStateException>());
        });
    }

    [Test]
    public async Task Pausing_stops_the_guest_counter()
    {
        await StartAsync(_sim, Vm(1));
        _clock.Advance(TimeSpan.FromSeconds(3));
        await _sim.PauseAsync(Id(1));
        _clock.Advance(TimeSpan.FromSeconds(10));
        var paused = (await _sim.TryGetDomainAsync(Id(1)))!;
        await _sim.UnpauseAsync(Id(1));
        _clock.Advance(TimeSpan.FromSeconds(2));

        await Assert.MultipleAsync(async () =>
        {
            Assert.That(paused.GuestCounter, Is.EqualTo(3));
            Assert.That((await _sim.TryGetDomainAsync(Id(1)))!.GuestCounter, Is.EqualTo(5));
        });
    }

    [Test]
    public async Task Suspend_then_resume_through_a_saved_image_keeps_the_guest_counter()
    {
        await StartAsync(_sim, Vm(1));
        _clock.Advance(TimeSpan.FromSeconds(10));
        using var image = new MemoryStream();

        var saved = await _sim.SaveAsync(Id(1), image);
        await _sim.DestroyAsync(Id(1));
        _clock.Advance(TimeSpan.FromSeconds(100));
        image.Position = 0;
        await _sim.CreateAsync(Vm(1));
        var restored = await _sim.RestoreAsync(Id(1), image);
        await _sim.UnpauseAsync(Id(1));
        _clock.Advance(TimeSpan.FromSeconds(5));
        var resumed = (await _sim.TryGetDomainAsync(Id(1)))!;

        Assert.Multiple(() =>
        {
            Assert.That((saved.PowerState, saved.ShutdownReason), Is.EqualTo((DomainPowerState.Shutdown, (ShutdownReason?)ShutdownReason.Suspend)));
            Assert.That(saved.GuestCounter, Is.EqualTo(10));
            Assert.That(restored.GuestCounter, Is.EqualTo(10));
            Assert.That(restored.Built, Is.True);
            Assert.That(restored.GuestAgent, Is.Not.Null, "a resumed guest's agent was already running");
            Assert.That(resumed.GuestCounter, Is.EqualTo(15));
            Assert.That(resumed.DomId, Is.EqualTo(2));
        });
    }

    [Test]
    public async Task A_suspend_image_of_another_vm_or_a_damaged_one_is_refused_and_the_domain_stays_unbuilt()
    {
        await StartAsync(_sim, Vm(1));
        using var image = new MemoryStream();
        await _sim.SaveAsync(Id(1), image);
        await _sim.CreateAsync(Vm(2));
        var bytes = image.ToArray();
        var damaged = (byte[])bytes.Clone();
        damaged[20] ^= 0xff;

        await Assert.MultipleAsync(async () =>
        {
            Assert.That(async () => await _sim.RestoreAsync(Id(2), new MemoryStream(bytes)), Throws.TypeOf<SuspendImageException>());
            await _sim.DestroyAsync(Id(1));
            await _sim.CreateAsync(Vm(1));
            Assert.That(async () => await _sim.RestoreAsync(Id(1), new MemoryStream(damaged)), Throws.TypeOf<SuspendImageException>());
            Assert.That(async () => await _sim.RestoreAsync(Id(1), new MemoryStream(bytes[..^1])), Throws.TypeOf<SuspendImageException>());
            Assert.That((await _sim.TryGetDomainAsync(Id(1)))!.Built, Is.False);
            Assert.That((await _sim.RestoreAsync(Id(1), new MemoryStream(bytes))).Built, Is.True);
        });
    }

    [Test]
    public async Task Removable_media_can_be_ejected_and_inserted_but_a_disk_cannot()
    {
        var config = Vm(1) with
        {
            Vbds =
            [
                new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("disk")),
                new VbdConfig("xvdd", VbdKind.CdRom, VbdMode.ReadOnly, new DiskBinding("iso")),
            ],
        };
        await StartAsync(_sim, config);

        var ejected = await _sim.EjectVbdAsync(Id(1), "xvdd");
        var inserted = await _sim.InsertVbdAsync(Id(1), "xvdd", new DiskBinding("other-iso"));

        Assert.Multiple(() =>
        {
            Assert.That(ejected.Vbds.Single(v => v.Device == "xvdd").Disk, Is.Null);
            Assert.That(inserted.Vbds.Single(v => v.Device == "xvdd").Disk, Is.EqualTo(new DiskBinding("other-iso")));
            Assert.That(async () => await _sim.EjectVbdAsync(Id(1), "xvda"), Throws.TypeOf<MediaException>());
            Assert.That(async () => await _sim.InsertVbdAsync(Id(1), "xvdd", new DiskBinding("third")), Throws.TypeOf<MediaException>());
            Assert.That(async () => await _sim.PlugVbdAsync(Id(1), config.Vbds[0]), Throws.TypeOf<DeviceAlreadyExistsException>());
            Assert.That(async () => await _sim.UnplugVbdAsync(Id(1), "xvdz", force: false), Throws.TypeOf<DeviceNotFoundException>());
        });
    }

    [Test]
    public async Task A_vif_plugged_after_boot_appears_in_the_agent_networks()
    {
        await StartAsync(_sim, Vm(1));
        _clock.Advance(TimeSpan.FromSeconds(5));
        var events = _sim.Subscribe();

        await _sim.PlugVifAsync(Id(1), new VifConfig(1, "02:00:00:00:01:01", "xenbr1"));

        var seen = Drain(events);
        Assert.Multiple(() =>
        {
            Assert.That(seen.Select(e => e.Kind), Is.EqualTo(new[] { DomainEventKind.DevicePlugged, DomainEventKind.GuestAgentChanged }));
            Assert.That(GuestAgentParser.Parse(seen[^1].State.GuestAgent!.Xenstore).Networks, Does.ContainKey("1/ip"));
        });
    }

    [Test]
    public async Task Vcpus_can_be_changed_within_the_maximum()
    {
        await StartAsync(_sim, Vm(1, vcpus: 4) with { VcpusAtStartup = 2 });

        var changed = await _sim.SetVcpusAsync(Id(1), 4);

        Assert.Multiple(() =>
        {
            Assert.That(changed.VcpusOnline, Is.EqualTo(4));
            Assert.That(async () => await _sim.SetVcpusAsync(Id(1), 5), Throws.TypeOf<InvalidDomainRequestException>());
        });
    }

    [Test]
    public async Task The_guest_workload_writes_a_verifiable_pattern_to_its_disks_and_stats_count_the_bytes()
    {
        _sim.Dispose();
        var provider = new MemoryDiskProvider(64 * 1024);
        var workloads = new List<DiskPatternWorkload>();
        (_clock, _sim) = New(new SimulatorOptions
        {
            DiskProvider = provider,
            WorkloadFactory = _ =>
            {
                var workload = new DiskPatternWorkload();
                workloads.Add(workload);
                return workload;
            },
        });
        await StartAsync(_sim, Vm(1) with { Vbds = [new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-1"))] });

        for (var i = 0; i < 3; i++)
        {
            Assert.That(await _sim.RunWorkloadStepAsync(Id(1)), Is.True);
        }

        var stats = await _sim.GetStatsAsync(Id(1));
        var disk = provider.Disks["vdi-1"];
        var bad = await workloads.Single().VerifyAsync(Id(1), "xvda", disk, CancellationToken.None);
        var block = new byte[DiskPattern.BlockSize];
        await disk.ReadAsync(2 * DiskPattern.BlockSize, block, CancellationToken.None);
        await Assert.MultipleAsync(async () =>
        {
            Assert.That(bad, Is.Empty);
            Assert.That(workloads.Single().Written, Has.Count.EqualTo(3));
            Assert.That(DiskPattern.TryReadBlock(block, out var owner, out var step, out var number), Is.True);
            Assert.That((owner, step, number), Is.EqualTo((Id(1), 3L, 2L)));
            Assert.That(stats.Vbds.Single(), Is.EqualTo(new VbdStats("xvda", 0, 3 * DiskPattern.BlockSize)));
            await _sim.DestroyAsync(Id(1));
            Assert.That(disk.Disposed, Is.True, "destroy closes the guest's disks");
        });
    }

    [Test]
    public async Task A_running_guest_dirties_memory_pages_at_the_set_rate_and_a_paused_one_does_not()
    {
        (_clock, _sim) = New(new SimulatorOptions { DirtyPagesPerSecond = 1000 });
        await StartAsync(_sim, Vm(1));

        _clock.Advance(TimeSpan.FromSeconds(3));
        var running = (await _sim.GetStatsAsync(Id(1))).PagesDirtied;
        await _sim.PauseAsync(Id(1));
        _clock.Advance(TimeSpan.FromSeconds(5));
        var paused = (await _sim.GetStatsAsync(Id(1))).PagesDirtied;

        Assert.That((running, paused), Is.EqualTo((3000L, 3000L)));
    }

    [Test]
    public async Task A_damaged_pattern_block_is_found_by_verification()
    {
        var workload = new DiskPatternWorkload();
        var disk = new MemoryDisk(16 * 1024);
        var context = new FakeGuest(Id(1), new Dictionary<string, IGuestDisk> { ["xvda"] = disk });
        await workload.StepAsync(context, CancellationToken.None);
        await workload.StepAsync(context, CancellationToken.None);
        await disk.WriteAsync(DiskPattern.BlockSize + 100, new byte[] { 0xAA }, CancellationToken.None);

        var bad = await workload.VerifyAsync(Id(1), "xvda", disk, CancellationToken.None);

        Assert.That(bad, Is.EqualTo(new long[] { 1 }));
    }

    [Test]
    public async Task Destroying_a_domain_lets_the_others_balloon_back_up()
    {
        _sim.Dispose();
        (_clock, _sim) = New(new SimulatorOptions { HostMemoryBytes = 8 * GiB, HostOverheadBytes = GiB });
        await StartAsync(_sim, Vm(1, dynamicMin: GiB, dynamicMax: 4 * GiB));
        await StartAsync(_sim, Vm(2, dynamicMin: GiB, dynamicMax: 4 * GiB));
        _clock.Advance(TimeSpan.FromSeconds(10));
        var squeezed = (await _sim.TryGetDomainAsync(Id(1)))!;

        await _sim.DestroyAsync(Id(2));
        _clock.Advance(TimeSpan.FromSeconds(10));
        var grown = (await _sim.TryGetDomainAsync(Id(1)))!;

        Assert.Multiple(() =>
        {
            Assert.That(squeezed.MemoryActual, Is.LessThan(4 * GiB));
            Assert.That((grown.MemoryTarget, grown.MemoryActual), Is.EqualTo((4 * GiB, 4 * GiB)));
        });
    }

    [Test]
    public async Task A_subscriber_that_falls_behind_gets_an_overflow_instead_of_silently_missing_events()
    {
        _sim.Dispose();
        (_clock, _sim) = New(new SimulatorOptions { EventCapacity = 3 });
        var events = _sim.Subscribe();

        await StartAsync(_sim, Vm(1));

        Assert.Multiple(() =>
        {
            Assert.That(Drain(events), Has.Count.EqualTo(3));
            Assert.That(events.Reader.Completion.Exception?.InnerException, Is.TypeOf<EventStreamOverflowException>());
        });
    }

    [Test]
    public async Task Watch_streams_the_events_from_the_moment_it_is_called()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var stream = _sim.WatchAsync(timeout.Token);
        await StartAsync(_sim, Vm(1));

        var kinds = new List<DomainEventKind>();
        await foreach (var domainEvent in stream)
        {
            kinds.Add(domainEvent.Kind);
            if (domainEvent.Kind == DomainEventKind.Unpaused)
            {
                break;
            }
        }

        Assert.That(kinds, Is.EqualTo(new[]
        {
            DomainEventKind.Created, DomainEventKind.Built, DomainEventKind.DevicePlugged, DomainEventKind.Unpaused,
        }));
    }

    [Test]
    public async Task The_same_script_gives_the_same_events_twice()
    {
        var first = await RunScriptAsync();
        var second = await RunScriptAsync();

        Assert.Multiple(() =>
        {
            Assert.That(first, Has.Count.GreaterThan(20));
            Assert.That(second, Is.EqualTo(first));
        });
    }

    private static async Task<List<string>> RunScriptAsync()
    {
        var clock = new ManualClock();
        using var sim = new SimulatorBackend(new SimulatorOptions { HostMemoryBytes = 6 * GiB, HostOverheadBytes = GiB }, clock);
        var events = sim.Subscribe();
        await StartAsync(sim, Vm(1, dynamicMin: GiB, dynamicMax: 3 * GiB));
        clock.Advance(TimeSpan.FromSeconds(3));
        await StartAsync(sim, Vm(2, dynamicMin: GiB, dynamicMax: 3 * GiB));
        clock.Advance(TimeSpan.FromSeconds(3));
        await sim.RequestShutdownAsync(Id(1), ShutdownRequest.Reboot);
        clock.Advance(TimeSpan.FromSeconds(2));
        await sim.DestroyAsync(Id(1));
        await StartAsync(sim, Vm(1, dynamicMin: GiB, dynamicMax: 3 * GiB));
        sim.TriggerGuestShutdown(Id(2), ShutdownReason.Crash);
        using var image = new MemoryStream();
        await sim.SaveAsync(Id(1), image);
        await sim.DestroyAsync(Id(1));
        await sim.DestroyAsync(Id(2));
        clock.Advance(TimeSpan.FromSeconds(1));
        var options = new JsonSerializerOptions { Converters = { new JsonStringEnumConverter() } };
        return [.. Drain(events).Select(e => JsonSerializer.Serialize(e, options))];
    }

    private sealed class FakeGuest(Guid uuid, IReadOnlyDictionary<string, IGuestDisk> disks) : IGuestContext
    {
        public Guid Uuid => uuid;

        public int DomId => 1;

        public long Counter => 0;

        public IReadOnlyDictionary<string, IGuestDisk> Disks => disks;

        public void WriteConsole(string line)
        {
        }
    }
}

public sealed class SimulatorDensityTests
{
    [Test]
    public async Task Two_hundred_ballooning_domains_fit_a_small_host_by_squeezing_and_give_all_memory_back()
    {
        var clock = new ManualClock();
        using var sim = new SimulatorBackend(new SimulatorOptions { HostMemoryBytes = 16 * GiB, HostOverheadBytes = GiB }, clock);
        var free = (await sim.GetHostMemoryAsync()).Free;

        for (var n = 1; n <= 200; n++)
        {
            await StartAsync(sim, Vm(n, dynamicMin: 64 * MiB, dynamicMax: 256 * MiB));
        }

        clock.Advance(TimeSpan.FromSeconds(10));
        var running = await sim.ListDomainsAsync();
        var crowded = await sim.GetHostMemoryAsync();
        for (var n = 1; n <= 200; n++)
        {
            await sim.DestroyAsync(Id(n));
        }

        Assert.Multiple(async () =>
        {
            Assert.That(running.Select(d => d.DomId), Is.EqualTo(Enumerable.Range(1, 200)));
            // 200 × 256 MiB would not fit in 15 GiB: everyone is squeezed, to the same target.
            Assert.That(running.Select(d => d.MemoryTarget).Distinct().Single(), Is.LessThan(256 * MiB).And.GreaterThanOrEqualTo(64 * MiB));
            Assert.That(running.All(d => d.MemoryActual == d.MemoryTarget), Is.True);
            Assert.That(crowded.Free, Is.GreaterThanOrEqualTo(Xapi.Xenops.Memory.Squeezer.DefaultHostFreeReserveKib * 1024));
            Assert.That((await sim.GetHostMemoryAsync()).Free, Is.EqualTo(free));
        });
    }
}
