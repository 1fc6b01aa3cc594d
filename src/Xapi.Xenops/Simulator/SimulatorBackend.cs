using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// The default backend: fake domains that behave like Xen's where the daemon can tell. Domids
/// count up from 1; memory is accounted against the host and squeezed as squeezed would; guests
/// boot, publish agent data, answer shutdown requests, balloon, keep a counter and may run a
/// workload over their disks — all at instants of an injected <see cref="ISimulationClock"/>, so
/// one script of operations and clock advances gives one sequence of events.
/// </summary>
/// <remarks>
/// Every operation takes one lock, checks, changes and emits its events inside it, so events are
/// totally ordered and an operation that throws changed nothing. Disk and stream I/O run outside
/// the lock. Guests without a running agent do not answer shutdown requests (the agent stands for
/// the PV drivers here).
/// </remarks>
public sealed partial class SimulatorBackend : IHypervisor, IDisposable
{
    private readonly Lock _gate = new();
    private readonly SimulatorOptions _options;
    private readonly ISimulationClock _clock;
    private readonly ILogger _logger;
    private readonly Dictionary<Guid, SimDomain> _domains = [];
    private readonly List<Channel<DomainEvent>> _subscribers = [];
    private readonly PriorityQueue<ScheduledAction, (TimeSpan Due, long Order)> _schedule = new();
    private int _nextDomId = 1;
    private long _sequence;
    private long _scheduleOrder;
    private TimeSpan _simulatedNow;
    private bool _dirty;
    private bool _writePending;
    private bool _disposed;
    private Timer? _stateWriter;

    public SimulatorBackend(SimulatorOptions options, ISimulationClock clock)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.HostMemoryBytes, options.HostOverheadBytes);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.EventCapacity, 1);
        _options = options;
        _clock = clock;
        _logger = options.Logger;
        _simulatedNow = clock.Now;
        if (options.StatePath is { } path && File.Exists(path))
        {
            Load(path);
        }

        _clock.Advanced += OnClockAdvanced;
    }

    public void Dispose()
    {
        _clock.Advanced -= OnClockAdvanced;
        _stateWriter?.Dispose();
        using (Enter())
        {
            // What a deferred write still owed goes out now.
            _disposed = true;
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryComplete();
            }

            _subscribers.Clear();
        }
    }

    public ValueTask<DomainState> CreateAsync(DomainConfig config, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            if (_domains.ContainsKey(config.Uuid))
            {
                throw new DomainAlreadyExistsException(config.Uuid);
            }

            Validate(config);
            var overheadBytes = MemoryModel.OverheadBytes(config.Type, config.Memory.StaticMax, config.VcpusMax, config.ShadowMultiplier);
            var overheadKib = MemoryModel.KibOfBytesUsed(overheadBytes);
            // As xenopsd asks squeezed: the guest's dynamic range plus the domain's overhead.
            var minKib = MemoryModel.KibOfBytesUsed(config.Memory.DynamicMin) + overheadKib;
            var maxKib = MemoryModel.KibOfBytesUsed(config.Memory.DynamicMax) + overheadKib;
            var squeeze = Squeezer.FreeMemoryRange(HostFreeKib(), BalloonDomains(), minKib, maxKib, _options.HostFreeReserveKib);
            ApplyTargets(squeeze.Targets, immediate: true);

            var guestKib = squeeze.GrantedKib - overheadKib;
            var domain = new SimDomain(config, _nextDomId++, overheadKib, _simulatedNow)
            {
                ActualKib = guestKib,
                TargetKib = guestKib,
                Workload = _options.WorkloadFactory?.Invoke(config),
            };
            _domains.Add(config.Uuid, domain);
            domain.Console($"{Stamp()} domain {domain.DomId} created for {config.Name}", _options.ConsoleCapacity);
            LogCreated(config.Uuid, domain.DomId, MemoryModel.BytesOfKib(guestKib));
            return new(Emit(DomainEventKind.Created, domain));
        }
    }

    public ValueTask<DomainState> BuildAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Built || domain.Power != DomainPowerState.Paused)
            {
                throw new DomainStateException(uuid, "build", "a created, unbuilt domain", domain.Power);
            }

            domain.Built = true;
            domain.Console($"{Stamp()} Booting {domain.Config.Name} ({domain.Config.Type}, {domain.VcpusOnline} vCPUs)", _options.ConsoleCapacity);
            return new(Emit(DomainEventKind.Built, domain));
        }
    }

    public ValueTask<DomainState> PauseAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Power != DomainPowerState.Running)
            {
                throw new DomainStateException(uuid, "pause", nameof(DomainPowerState.Running), domain.Power);
            }

            WriteMemory(domain);
            domain.StopRunning(_simulatedNow);
            domain.Power = DomainPowerState.Paused;
            return new(Emit(DomainEventKind.Paused, domain));
        }
    }

    public ValueTask<DomainState> UnpauseAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Power != DomainPowerState.Paused || !domain.Built)
            {
                throw new DomainStateException(uuid, "unpause", "a built, paused domain", domain.Power);
            }

            WriteMemory(domain);
            domain.Power = DomainPowerState.Running;
            domain.RunningSince = _simulatedNow;
            if (domain.Agent is null && !domain.AgentScheduled)
            {
                domain.AgentScheduled = true;
                Schedule(_options.GuestAgentDelay, domain, ScheduledKind.AgentStarts, null);
            }

            Emit(DomainEventKind.Unpaused, domain);
            // The guest's balloon driver joins in: squeezed's balancer shares the host again.
            Rebalance();
            return new(domain.Snapshot(_simulatedNow, _options.GuestCounterPeriod));
        }
    }

    public ValueTask<bool> RequestShutdownAsync(Guid uuid, ShutdownRequest request, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Power != DomainPowerState.Running || domain.Agent is null)
            {
                // Nobody in the guest to read the request: xenopsd sees no acknowledgement.
                return new(false);
            }

            var reason = request switch
            {
                ShutdownRequest.Poweroff => ShutdownReason.Poweroff,
                ShutdownRequest.Reboot => ShutdownReason.Reboot,
                ShutdownRequest.Suspend => ShutdownReason.Suspend,
                _ => ShutdownReason.Halt,
            };
            domain.Console($"{Stamp()} shutdown request: {request}", _options.ConsoleCapacity);
            if (domain.IgnoresShutdownRequests)
            {
                // Read and acknowledged, then nothing: the toolstack's wait runs into its timeout.
                return new(true);
            }
            Schedule(_options.ShutdownAckDelay, domain, ScheduledKind.GuestShutdown, reason);
            return new(true);
        }
    }

    /// <summary>
    /// From now on the domain's guest acknowledges shutdown, reboot and suspend requests and then
    /// carries none of them out, as a guest whose shutdown program does nothing; the next domain of
    /// the VM cooperates again.
    /// </summary>
    public void IgnoreShutdownRequests(Guid uuid)
    {
        using (Enter())
        {
            Find(uuid).IgnoresShutdownRequests = true;
        }
    }

    /// <summary>
    /// The guest stops by itself, as if its OS powered off, rebooted, halted or crashed; the daemon
    /// sees a Shutdown event and applies actions_after_*.
    /// </summary>
    public void TriggerGuestShutdown(Guid uuid, ShutdownReason reason)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Power != DomainPowerState.Running)
            {
                throw new DomainStateException(uuid, "guest shutdown", nameof(DomainPowerState.Running), domain.Power);
            }

            ShutDown(domain, reason);
        }
    }

    public async ValueTask<DomainState> SaveAsync(Guid uuid, Stream destination, CancellationToken cancellationToken = default)
    {
        SuspendImageBody body;
        int domId;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            var suspended = domain.Power == DomainPowerState.Shutdown && domain.Reason == ShutdownReason.Suspend;
            if (!domain.Built || (domain.Power == DomainPowerState.Shutdown && !suspended))
            {
                throw new DomainStateException(uuid, "save", "a built domain that is running, paused or suspended", domain.Power);
            }

            domId = domain.DomId;
            body = StateOf(domain);
        }

        await SuspendImage.WriteAsync(destination, body, cancellationToken);

        using (Enter())
        {
            CatchUp();
            if (!_domains.TryGetValue(uuid, out var domain) || domain.DomId != domId)
            {
                throw new DomainNotFoundException(uuid);
            }

            // The guest's state is what the image holds, whatever ran while it was written.
            domain.StopRunning(_simulatedNow);
            domain.CounterBase = body.GuestCounter;
            domain.RunningTime = TimeSpan.Zero;
            if (domain.Power != DomainPowerState.Shutdown)
            {
                ShutDown(domain, ShutdownReason.Suspend);
            }

            return domain.Snapshot(_simulatedNow, _options.GuestCounterPeriod);
        }
    }

    public async ValueTask<DomainState> RestoreAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default)
    {
        var body = await SuspendImage.ReadAsync(source, _options.MaxSuspendImageBytes, cancellationToken);
        if (body.Uuid != uuid)
        {
            throw new SuspendImageException($"the suspend image belongs to VM {body.Uuid}, not {uuid}");
        }

        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Built || domain.Power != DomainPowerState.Paused)
            {
                throw new DomainStateException(uuid, "restore", "a created, unbuilt domain", domain.Power);
            }

            if (body.VcpusOnline < 1 || body.VcpusOnline > domain.Config.VcpusMax)
            {
                throw new SuspendImageException($"the suspend image has {body.VcpusOnline} vCPUs online; the domain allows {domain.Config.VcpusMax}");
            }

            TakeState(domain, body, "resumed from suspend image");
            return Emit(DomainEventKind.Restored, domain);
        }
    }

    /// <summary>What a suspend image or a migration carries of a guest besides its memory.</summary>
    private SuspendImageBody StateOf(SimDomain domain) => new(
        domain.Config.Uuid,
        domain.Config.Name,
        domain.Counter(_simulatedNow, _options.GuestCounterPeriod),
        domain.ActualKib,
        domain.VcpusOnline,
        domain.Agent is null ? null : new Dictionary<string, string>(domain.Agent),
        domain.ConsoleText);

    /// <summary>A created domain becomes the guest <paramref name="state"/> describes; it stays paused.</summary>
    private void TakeState(SimDomain domain, SuspendImageBody state, string consoleLine)
    {
        domain.Built = true;
        domain.CounterBase = state.GuestCounter;
        domain.RunningTime = TimeSpan.Zero;
        domain.VcpusOnline = state.VcpusOnline;
        domain.ConsoleReplace(state.ConsoleText, _options.ConsoleCapacity);
        domain.Console($"{Stamp()} {consoleLine}", _options.ConsoleCapacity);
        // The guest's agent was running when it stopped: no boot delay.
        if (state.GuestAgent is not null)
        {
            domain.Agent = new SortedDictionary<string, string>(state.GuestAgent, StringComparer.Ordinal);
            domain.AgentScheduled = true;
            RefreshAgent(domain);
        }
    }

    public async ValueTask DestroyAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        List<IGuestDisk> disks;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            domain.StopRunning(_simulatedNow);
            _domains.Remove(uuid);
            disks = [.. domain.Disks.Values];
            domain.Disks.Clear();
            LogDestroyed(uuid, domain.DomId);
            Emit(DomainEventKind.Destroyed, domain);
            // Memory came free: squeezed shares it out again.
            Rebalance();
        }

        foreach (var disk in disks)
        {
            await disk.DisposeAsync();
        }
    }

    public async ValueTask<DomainState> PlugVbdAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "VBD plug");
            if (domain.Vbds.Any(v => v.Device == vbd.Device))
            {
                throw new DeviceAlreadyExistsException(uuid, vbd.Device);
            }
        }

        var disk = await OpenDiskAsync(uuid, vbd, cancellationToken);
        try
        {
            using (Enter())
            {
                CatchUp();
                var domain = FindLive(uuid, "VBD plug");
                if (domain.Vbds.Any(v => v.Device == vbd.Device))
                {
                    throw new DeviceAlreadyExistsException(uuid, vbd.Device);
                }

                domain.Vbds.Add(new VbdState(vbd.Device, vbd.Kind, vbd.Mode, vbd.Disk));
                if (disk is not null)
                {
                    domain.Disks[vbd.Device] = disk;
                    disk = null;
                }

                return Emit(DomainEventKind.DevicePlugged, domain);
            }
        }
        finally
        {
            if (disk is not null)
            {
                await disk.DisposeAsync();
            }
        }
    }

    public async ValueTask<DomainState> UnplugVbdAsync(Guid uuid, string device, bool force, CancellationToken cancellationToken = default)
    {
        IGuestDisk? disk;
        DomainState state;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            var vbd = domain.Vbds.Find(v => v.Device == device) ?? throw new DeviceNotFoundException(uuid, device);
            domain.Vbds.Remove(vbd);
            domain.Disks.Remove(device, out disk);
            state = Emit(DomainEventKind.DeviceUnplugged, domain);
        }

        if (disk is not null)
        {
            await disk.DisposeAsync();
        }

        return state;
    }

    public async ValueTask<DomainState> EjectVbdAsync(Guid uuid, string device, CancellationToken cancellationToken = default)
    {
        IGuestDisk? disk;
        DomainState state;
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "VBD eject");
            var index = domain.Vbds.FindIndex(v => v.Device == device);
            if (index < 0)
            {
                throw new DeviceNotFoundException(uuid, device);
            }

            var vbd = domain.Vbds[index];
            if (vbd.Kind == VbdKind.Disk)
            {
                throw new MediaException(uuid, device, "not a removable drive");
            }

            if (vbd.Disk is null)
            {
                throw new MediaException(uuid, device, "the drive is empty");
            }

            domain.Vbds[index] = vbd with { Disk = null };
            domain.Disks.Remove(device, out disk);
            state = Emit(DomainEventKind.MediaChanged, domain);
        }

        if (disk is not null)
        {
            await disk.DisposeAsync();
        }

        return state;
    }

    public async ValueTask<DomainState> InsertVbdAsync(Guid uuid, string device, DiskBinding disk, CancellationToken cancellationToken = default)
    {
        VbdState vbd;
        using (Enter())
        {
            CatchUp();
            vbd = CheckInsert(FindLive(uuid, "VBD insert"), device);
        }

        var opened = await OpenDiskAsync(uuid, new VbdConfig(vbd.Device, vbd.Kind, vbd.Mode, disk), cancellationToken);
        try
        {
            using (Enter())
            {
                CatchUp();
                var domain = FindLive(uuid, "VBD insert");
                CheckInsert(domain, device);
                var index = domain.Vbds.FindIndex(v => v.Device == device);
                domain.Vbds[index] = domain.Vbds[index] with { Disk = disk };
                if (opened is not null)
                {
                    domain.Disks[device] = opened;
                    opened = null;
                }

                return Emit(DomainEventKind.MediaChanged, domain);
            }
        }
        finally
        {
            if (opened is not null)
            {
                await opened.DisposeAsync();
            }
        }
    }

    public ValueTask<DomainState> PlugVifAsync(Guid uuid, VifConfig vif, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "VIF plug");
            if (domain.Vifs.ContainsKey(vif.Device))
            {
                throw new DeviceAlreadyExistsException(uuid, vif.Device.ToString(CultureInfo.InvariantCulture));
            }

            domain.Vifs.Add(vif.Device, new VifState(vif.Device, vif.Mac, vif.Bridge));
            var state = Emit(DomainEventKind.DevicePlugged, domain);
            if (domain.Agent is not null)
            {
                // The guest configures the new interface and reports its address.
                RefreshAgent(domain);
                state = Emit(DomainEventKind.GuestAgentChanged, domain);
            }

            return new(state);
        }
    }

    public ValueTask<DomainState> UnplugVifAsync(Guid uuid, int device, bool force, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (!domain.Vifs.Remove(device))
            {
                throw new DeviceNotFoundException(uuid, device.ToString(CultureInfo.InvariantCulture));
            }

            var state = Emit(DomainEventKind.DeviceUnplugged, domain);
            if (domain.Agent is not null)
            {
                RefreshAgent(domain);
                state = Emit(DomainEventKind.GuestAgentChanged, domain);
            }

            return new(state);
        }
    }

    public ValueTask<DomainState> SetVcpusAsync(Guid uuid, int online, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "set vCPUs");
            if (online < 1 || online > domain.Config.VcpusMax)
            {
                throw new InvalidDomainRequestException(uuid, $"{online} vCPUs requested; the domain allows 1..{domain.Config.VcpusMax}");
            }

            domain.VcpusOnline = online;
            return new(Emit(DomainEventKind.VcpusChanged, domain));
        }
    }

    public ValueTask<DomainState> SetMemoryTargetAsync(Guid uuid, long targetBytes, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "set memory target");
            if (targetBytes < domain.DynamicMin || targetBytes > domain.DynamicMax)
            {
                throw new InvalidDomainRequestException(uuid, $"memory target {targetBytes} is outside the dynamic range {domain.DynamicMin}..{domain.DynamicMax}");
            }

            domain.TargetKib = MemoryModel.KibOfBytesUsed(targetBytes);
            return new(Emit(DomainEventKind.MemoryChanged, domain));
        }
    }

    public ValueTask<DomainState> SetMemoryDynamicRangeAsync(Guid uuid, long dynamicMinBytes, long dynamicMaxBytes, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = FindLive(uuid, "set memory dynamic range");
            var memory = domain.Config.Memory;
            if (!(memory with { DynamicMin = dynamicMinBytes, DynamicMax = dynamicMaxBytes }).IsOrdered)
            {
                throw new InvalidDomainRequestException(uuid, $"dynamic range {dynamicMinBytes}..{dynamicMaxBytes} is not within the static range {memory.StaticMin}..{memory.StaticMax}");
            }

            domain.DynamicMin = dynamicMinBytes;
            domain.DynamicMax = dynamicMaxBytes;
            var minKib = MemoryModel.KibOfBytesUsed(dynamicMinBytes);
            var maxKib = MemoryModel.KibOfBytesUsed(dynamicMaxBytes);
            domain.TargetKib = Math.Clamp(domain.TargetKib, minKib, maxKib);
            Emit(DomainEventKind.MemoryChanged, domain);
            Rebalance();
            return new(domain.Snapshot(_simulatedNow, _options.GuestCounterPeriod));
        }
    }

    public ValueTask<DomainStats> GetStatsAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            var running = domain.TotalRunning(_simulatedNow);
            // A guest that keeps each vCPU 5% busy and trickles network traffic: deterministic figures.
            var cpu = TimeSpan.FromTicks(running.Ticks * domain.VcpusOnline / 20);
            var seconds = (long)running.TotalSeconds;
            return new(new DomainStats(
                uuid,
                domain.DomId,
                cpu,
                MemoryModel.BytesOfKib(domain.ActualKib),
                MemoryModel.BytesOfKib(domain.TargetKib),
                [.. domain.Vbds.Select(v => domain.DiskCounters.TryGetValue(v.Device, out var c) ? new VbdStats(v.Device, c.Read, c.Written) : new VbdStats(v.Device, 0, 0))],
                [.. domain.Vifs.Values.Select(v => new VifStats(v.Device, 1500 * seconds, 500 * seconds))],
                (long)(running.TotalSeconds * _options.DirtyPagesPerSecond)));
        }
    }

    public ValueTask<DomainState?> TryGetDomainAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            return new(_domains.TryGetValue(uuid, out var domain) ? domain.Snapshot(_simulatedNow, _options.GuestCounterPeriod) : null);
        }
    }

    public ValueTask<IReadOnlyList<DomainState>> ListDomainsAsync(CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            IReadOnlyList<DomainState> all = [.. _domains.Values.OrderBy(d => d.DomId).Select(d => d.Snapshot(_simulatedNow, _options.GuestCounterPeriod))];
            return new(all);
        }
    }

    public ValueTask<HostMemoryInfo> GetHostMemoryAsync(CancellationToken cancellationToken = default)
    {
        using (Enter())
        {
            CatchUp();
            return new(new HostMemoryInfo(_options.HostMemoryBytes, _options.HostOverheadBytes, MemoryModel.BytesOfKib(HostFreeKib())));
        }
    }

    public long LatestEventSequence
    {
        get
        {
            using (Enter())
            {
                return _sequence;
            }
        }
    }

    public IAsyncEnumerable<DomainEvent> WatchAsync(CancellationToken cancellationToken = default) =>
        // Subscribed now, not at the first MoveNextAsync, so no event between the call and the first read is lost.
        ReadAsync(Subscribe(), cancellationToken);

    /// <summary>A subscription as a channel, for readers that must see exactly what was emitted so far (tests).</summary>
    internal Channel<DomainEvent> Subscribe()
    {
        // Continuations never run inline in Emit, i.e. never under the backend's lock.
        var channel = Channel.CreateBounded<DomainEvent>(new BoundedChannelOptions(_options.EventCapacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
            AllowSynchronousContinuations = false,
        });
        using (Enter())
        {
            _subscribers.Add(channel);
        }

        return channel;
    }

    /// <summary>
    /// Runs one step of the guest's workload (if it has one and is running) over its disks.
    /// Returns whether a step ran.
    /// </summary>
    public async ValueTask<bool> RunWorkloadStepAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        await OpenMissingDisksAsync(uuid, cancellationToken);
        GuestContext context;
        IGuestWorkload workload;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Power != DomainPowerState.Running || domain.Workload is null)
            {
                return false;
            }

            workload = domain.Workload;
            var disks = domain.Disks.ToDictionary(
                d => d.Key,
                d => (IGuestDisk)new CountingDisk(d.Value, domain.DiskCounters.GetValueOrDefault(d.Key) ?? (domain.DiskCounters[d.Key] = new DiskCounter())));
            context = new GuestContext(this, domain, domain.Counter(_simulatedNow, _options.GuestCounterPeriod), disks);
        }

        await workload.StepAsync(context, cancellationToken);
        return true;
    }

    /// <summary>Domains found again from the state file have their disks opened when the guest first uses them.</summary>
    private async ValueTask OpenMissingDisksAsync(Guid uuid, CancellationToken cancellationToken)
    {
        List<VbdState> missing;
        using (Enter())
        {
            var domain = Find(uuid);
            missing = [.. domain.Vbds.Where(v => v.Disk is not null && !domain.Disks.ContainsKey(v.Device))];
        }

        foreach (var vbd in missing)
        {
            var disk = await OpenDiskAsync(uuid, new VbdConfig(vbd.Device, vbd.Kind, vbd.Mode, vbd.Disk), cancellationToken);
            if (disk is null)
            {
                continue;
            }

            using (Enter())
            {
                if (_domains.TryGetValue(uuid, out var domain) && domain.Vbds.Contains(vbd) && domain.Disks.TryAdd(vbd.Device, disk))
                {
                    disk = null;
                }
            }

            if (disk is not null)
            {
                await disk.DisposeAsync();
            }
        }
    }

    private async IAsyncEnumerable<DomainEvent> ReadAsync(Channel<DomainEvent> channel, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var domainEvent in channel.Reader.ReadAllAsync(cancellationToken))
            {
                yield return domainEvent;
            }
        }
        finally
        {
            using (Enter())
            {
                _subscribers.Remove(channel);
            }
        }
    }

    private async ValueTask<IGuestDisk?> OpenDiskAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken) =>
        vbd.Disk is null || _options.DiskProvider is null ? null : await _options.DiskProvider.OpenAsync(uuid, vbd, cancellationToken);

    private static VbdState CheckInsert(SimDomain domain, string device)
    {
        var vbd = domain.Vbds.Find(v => v.Device == device) ?? throw new DeviceNotFoundException(domain.Config.Uuid, device);
        if (vbd.Kind == VbdKind.Disk)
        {
            throw new MediaException(domain.Config.Uuid, device, "not a removable drive");
        }

        if (vbd.Disk is not null)
        {
            throw new MediaException(domain.Config.Uuid, device, "the drive is not empty");
        }

        return vbd;
    }

    private static void Validate(DomainConfig config)
    {
        if (!config.Memory.IsOrdered || config.Memory.StaticMin < 0)
        {
            throw new InvalidDomainRequestException(config.Uuid, "memory bounds are not ordered static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max");
        }

        if (config.VcpusMax < 1 || config.VcpusAtStartup < 1 || config.VcpusAtStartup > config.VcpusMax)
        {
            throw new InvalidDomainRequestException(config.Uuid, $"vCPUs at startup {config.VcpusAtStartup} must be within 1..{config.VcpusMax}");
        }

        if (config.ShadowMultiplier < 1.0)
        {
            throw new InvalidDomainRequestException(config.Uuid, "the shadow multiplier must be at least 1");
        }
    }

    private SimDomain Find(Guid uuid) =>
        _domains.TryGetValue(uuid, out var domain) ? domain : throw new DomainNotFoundException(uuid);

    private SimDomain FindLive(Guid uuid, string operation)
    {
        var domain = Find(uuid);
        return domain.Power == DomainPowerState.Shutdown
            ? throw new DomainStateException(uuid, operation, "a domain that has not shut down", domain.Power)
            : domain;
    }

    private long HostFreeKib()
    {
        var free = MemoryModel.KibOfBytesFree(_options.HostMemoryBytes - _options.HostOverheadBytes);
        foreach (var domain in _domains.Values)
        {
            free -= domain.OverheadKib + domain.ActualKib;
        }

        return free;
    }

    // Paused and stopped guests cannot move their balloons, as squeezed treats inactive domains.
    private List<BalloonDomain> BalloonDomains() =>
        [.. _domains.Values
            .Where(d => d.Power == DomainPowerState.Running && d.Config.CanBalloon)
            .OrderBy(d => d.DomId)
            .Select(d => new BalloonDomain(d.DomId, MemoryModel.KibOfBytesUsed(d.DynamicMin), MemoryModel.KibOfBytesUsed(d.DynamicMax), d.ActualKib, true))];

    /// <summary>Sets balloon targets; <paramref name="immediate"/> completes shrinking at once, as squeezed waits for it.</summary>
    private void ApplyTargets(IReadOnlyList<BalloonTarget> targets, bool immediate)
    {
        var byDomId = _domains.Values.ToDictionary(d => d.DomId);
        foreach (var target in targets)
        {
            var domain = byDomId[target.DomId];
            var changed = domain.TargetKib != target.TargetKib;
            domain.TargetKib = target.TargetKib;
            if (immediate && domain.ActualKib > target.TargetKib)
            {
                domain.ActualKib = target.TargetKib;
                changed = true;
            }

            if (changed)
            {
                Emit(DomainEventKind.MemoryChanged, domain);
            }
        }
    }

    private void Rebalance() =>
        ApplyTargets(Squeezer.Balance(HostFreeKib(), BalloonDomains(), _options.HostFreeReserveKib), immediate: false);

    private void ShutDown(SimDomain domain, ShutdownReason reason)
    {
        domain.StopRunning(_simulatedNow);
        domain.Power = DomainPowerState.Shutdown;
        domain.Reason = reason;
        domain.Agent = null;
        domain.Console($"{Stamp()} {reason switch
        {
            ShutdownReason.Crash => "Kernel panic - not syncing: simulated crash",
            ShutdownReason.Reboot => "reboot: Restarting system",
            ShutdownReason.Suspend => "PM: suspended",
            ShutdownReason.Halt => "reboot: System halted",
            _ => "reboot: Power down",
        }}", _options.ConsoleCapacity);
        Emit(DomainEventKind.Shutdown, domain);
    }

    private void RefreshAgent(SimDomain domain)
    {
        var os = _options.GuestOs;
        var tree = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["attr/PVAddons/MajorVersion"] = os.PvDriversMajor,
            ["attr/PVAddons/MinorVersion"] = os.PvDriversMinor,
            ["attr/PVAddons/MicroVersion"] = os.PvDriversMicro,
            ["attr/PVAddons/BuildVersion"] = os.PvDriversBuild,
            ["data/os_name"] = os.Name,
            ["data/os_uname"] = os.Uname,
            ["data/os_distro"] = os.Distro,
            ["data/os_majorver"] = os.MajorVersion,
            ["data/os_minorver"] = os.MinorVersion,
            ["data/host_name_dns"] = "sim-" + domain.Config.Uuid.ToString("N")[..8],
            ["data/meminfo_total"] = domain.ActualKib.ToString(CultureInfo.InvariantCulture),
            ["data/meminfo_free"] = (domain.ActualKib / 2).ToString(CultureInfo.InvariantCulture),
            ["control/feature-shutdown"] = "1",
            ["control/feature-poweroff"] = "1",
            ["control/feature-reboot"] = "1",
            ["control/feature-suspend"] = "1",
            ["control/feature-vcpu-hotplug"] = "1",
            ["feature/hotplug/vbd"] = "1",
            ["feature/hotplug/vif"] = "1",
        };
        if (domain.Config.CanBalloon)
        {
            tree["control/feature-balloon"] = "1";
        }

        if (os.StaticIpSetting)
        {
            tree["control/feature-static-ip-setting"] = "1";
        }

        // Addresses from the VM's identity and the interface, so the same VM always reports the same.
        var bytes = domain.Config.Uuid.ToByteArray();
        foreach (var vif in domain.Vifs.Keys)
        {
            tree[$"attr/vif/{vif}/ipv4/0"] = $"10.{bytes[0]}.{bytes[1]}.{(vif % 250) + 2}";
            tree[$"attr/vif/{vif}/ipv6/0"] = $"fd00::{bytes[0]:x2}{bytes[1]:x2}:{vif + 1:x}";
        }

        domain.Agent = tree;
    }

    private void Schedule(TimeSpan delay, SimDomain domain, ScheduledKind kind, ShutdownReason? reason)
    {
        var action = new ScheduledAction(domain.Config.Uuid, domain.DomId, kind, reason);
        if (delay == TimeSpan.Zero)
        {
            // An instant guest (benchmarks, dense tests) answers now rather than at the clock's next tick.
            Run(action);
            return;
        }

        _schedule.Enqueue(action, (_simulatedNow + delay, _scheduleOrder++));
    }

    private void OnClockAdvanced(object? sender, EventArgs e)
    {
        using (Enter())
        {
            CatchUp();
        }
    }

    /// <summary>Moves simulated time to the clock's, running what fell due in order (ties in scheduling order).</summary>
    private void CatchUp()
    {
        var now = _clock.Now;
        while (_schedule.TryPeek(out var action, out var due) && due.Due <= now)
        {
            _schedule.Dequeue();
            AdvanceTo(due.Due);
            Run(action);
        }

        AdvanceTo(now);
    }

    private void AdvanceTo(TimeSpan instant)
    {
        if (instant <= _simulatedNow)
        {
            return;
        }

        var elapsed = instant - _simulatedNow;
        _simulatedNow = instant;
        MoveBalloons(elapsed);
    }

    private void MoveBalloons(TimeSpan elapsed)
    {
        var stepKib = (long)(MemoryModel.KibOfBytesFree(_options.BalloonRateBytesPerSecond) * elapsed.TotalSeconds);
        if (stepKib <= 0)
        {
            return;
        }

        // Shrinking first, so the memory it frees can feed growing domains in the same instant.
        var running = _domains.Values.Where(d => d.Power == DomainPowerState.Running).OrderBy(d => d.DomId).ToList();
        foreach (var domain in running.Where(d => d.ActualKib > d.TargetKib))
        {
            domain.ActualKib = Math.Max(domain.TargetKib, domain.ActualKib - stepKib);
            Emit(DomainEventKind.MemoryChanged, domain);
        }

        foreach (var domain in running.Where(d => d.ActualKib < d.TargetKib))
        {
            var grow = Math.Min(Math.Min(stepKib, domain.TargetKib - domain.ActualKib), Math.Max(0, HostFreeKib()));
            if (grow > 0)
            {
                domain.ActualKib += grow;
                Emit(DomainEventKind.MemoryChanged, domain);
            }
        }
    }

    private void Run(ScheduledAction action)
    {
        // A domain destroyed (or replaced by a new one) since scheduling gets nothing.
        if (!_domains.TryGetValue(action.Uuid, out var domain) || domain.DomId != action.DomId || domain.Power != DomainPowerState.Running)
        {
            return;
        }

        switch (action.Kind)
        {
            case ScheduledKind.AgentStarts:
                RefreshAgent(domain);
                domain.Console($"{Stamp()} guest agent started", _options.ConsoleCapacity);
                Emit(DomainEventKind.GuestAgentChanged, domain);
                break;
            case ScheduledKind.GuestShutdown:
                ShutDown(domain, action.Reason ?? ShutdownReason.Poweroff);
                break;
        }
    }

    private DomainState Emit(DomainEventKind kind, SimDomain domain)
    {
        // Every change emits an event, so "emitted" is "the state file is stale".
        _dirty = true;
        var state = domain.Snapshot(_simulatedNow, _options.GuestCounterPeriod);
        var domainEvent = new DomainEvent(++_sequence, kind, state);
        for (var i = _subscribers.Count - 1; i >= 0; i--)
        {
            var subscriber = _subscribers[i];
            if (!subscriber.Writer.TryWrite(domainEvent))
            {
                subscriber.Writer.TryComplete(new EventStreamOverflowException(_options.EventCapacity));
                _subscribers.RemoveAt(i);
            }
        }

        return state;
    }

    private string Stamp() => string.Create(CultureInfo.InvariantCulture, $"[{_simulatedNow.TotalSeconds,10:F3}]");

    [LoggerMessage(Level = LogLevel.Debug, Message = "Simulated domain {DomId} created for VM {Uuid} with {MemoryBytes} bytes")]
    private partial void LogCreated(Guid uuid, int domId, long memoryBytes);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Simulated domain {DomId} of VM {Uuid} destroyed")]
    private partial void LogDestroyed(Guid uuid, int domId);

    private enum ScheduledKind
    {
        AgentStarts,
        GuestShutdown,
    }

    private sealed record ScheduledAction(Guid Uuid, int DomId, ScheduledKind Kind, ShutdownReason? Reason);

    private sealed class GuestContext(SimulatorBackend owner, SimDomain domain, long counter, IReadOnlyDictionary<string, IGuestDisk> disks) : IGuestContext
    {
        public Guid Uuid => domain.Config.Uuid;

        public int DomId => domain.DomId;

        public long Counter => counter;

        public IReadOnlyDictionary<string, IGuestDisk> Disks => disks;

        public void WriteConsole(string line)
        {
            lock (owner._gate)
            {
                domain.Console($"{owner.Stamp()} {line}", owner._options.ConsoleCapacity);
            }
        }
    }
}
