using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Versioning;
using Xapi.Xenops;
using Xapi.Xenops.Memory;

namespace Xapi.LibXenCtrl.Interop;

[SupportedOSPlatform("linux")]
public sealed class XenBackendOptions
{
    /// <summary>How a VM's domain boots (kernel, ramdisk, command line); by default the config's direct boot, else firmware.</summary>
    public Func<DomainConfig, XenBoot> Boot { get; init; } = XenBoot.Of;

    /// <summary>
    /// What libxl attaches for a VBD of the domain (the storage layer attaches the VDI and says
    /// where it is); by default the binding's id when it is an absolute path.
    /// </summary>
    public Func<DomainConfig, VbdConfig, CancellationToken, ValueTask<XenDisk?>> Disk { get; init; } =
        (_, vbd, _) => ValueTask.FromResult(LibxlDomainJson.DiskAtPath(vbd));

    /// <summary>Makes sure a VIF's bridge exists in dom0 before the domain's vif joins it.</summary>
    public Action<string> EnsureBridge { get; init; } = LinuxBridges.EnsureExists;

    /// <summary>How often <see cref="XenBackend.WatchAsync"/> lists the domains to find changes.</summary>
    public TimeSpan WatchInterval { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// The seam over libxl in a Xen dom0. libxl_domain_create_new creates, builds and attaches the
/// config's devices in one call, so <see cref="CreateAsync"/> does all three (the domain stays
/// paused), <see cref="BuildAsync"/> only checks the domain is there, and plugging a device the
/// config already held is a no-op. What libxl is not yet asked for here (hot-plug, media changes,
/// save/restore, suspend and halt requests, dynamic ranges) throws <see cref="NotSupportedException"/>
/// naming the operation. Calls block a pool thread for as long as libxl takes (create: seconds).
/// Domains are found by their VM uuid, which libxl stores as the domain's handle; dom0 is not listed.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class XenBackend(LibxlContext libxl, XenBackendOptions? options = null) : IHypervisor
{
    private const uint ControlDomain = 0;

    private readonly XenBackendOptions _options = options ?? new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    /// <summary>Domains created by this backend; a null value reserves the uuid while libxl creates it.</summary>
    private readonly ConcurrentDictionary<Guid, Created?> _created = new();

    private sealed record Created(DomainConfig Config, uint DomId, TimeSpan At);

    public async ValueTask<DomainState> CreateAsync(DomainConfig config, CancellationToken cancellationToken = default)
    {
        if (!config.Memory.IsOrdered || config.VcpusMax < 1 || config.VcpusAtStartup < 1 || config.VcpusAtStartup > config.VcpusMax)
        {
            throw new InvalidDomainRequestException(config.Uuid, "memory bounds must be ordered and 1 <= VCPUs_at_startup <= VCPUs_max");
        }
        if (!_created.TryAdd(config.Uuid, null))
        {
            throw new DomainAlreadyExistsException(config.Uuid);
        }
        try
        {
            var disks = new Dictionary<string, XenDisk>(StringComparer.Ordinal);
            foreach (var vbd in config.Vbds)
            {
                if (vbd.Disk is not null && await _options.Disk(config, vbd, cancellationToken) is { } disk)
                {
                    disks[vbd.Device] = disk;
                }
            }
            return await Task.Run(() =>
            {
                // A domain of this VM that is dying (a reboot's old one being torn down) is no conflict.
                if (FindInXen(config.Uuid) is { Dying: false })
                {
                    throw new DomainAlreadyExistsException(config.Uuid);
                }
                // No squeezing of other domains yet: the start needs this much free now.
                var needed = MemoryModel.StartRequirementBytes(config.Type, config.Memory, config.VcpusMax, config.ShadowMultiplier);
                var free = (long)libxl.GetFreeMemoryKib() * MemoryModel.BytesPerKib;
                if (needed > free)
                {
                    throw new NotEnoughMemoryException(needed, free);
                }
                var json = LibxlDomainJson.Build(config, _options.Boot(config), vbd => disks.GetValueOrDefault(vbd.Device));
                // libxl's vif-bridge hotplug script refuses a bridge that is not there.
                foreach (var bridge in config.Vifs.Select(v => v.Bridge).Where(b => b.Length > 0).Distinct(StringComparer.Ordinal))
                {
                    _options.EnsureBridge(bridge);
                }
                var domid = libxl.CreateDomain(json);
                var created = new Created(config, domid, _clock.Elapsed);
                _created[config.Uuid] = created;
                return StateOf(config.Uuid, domid);
            }, cancellationToken);
        }
        catch
        {
            if (_created.TryGetValue(config.Uuid, out var entry) && entry is null)
            {
                _created.TryRemove(config.Uuid, out _);
            }
            throw;
        }
    }

    public ValueTask<DomainState> BuildAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid => StateOf(uuid, domid), cancellationToken);

    public ValueTask<DomainState> PauseAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            libxl.Pause(domid);
            return StateOf(uuid, domid);
        }, cancellationToken);

    public ValueTask<DomainState> UnpauseAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            libxl.Unpause(domid);
            return StateOf(uuid, domid);
        }, cancellationToken);

    public ValueTask<bool> RequestShutdownAsync(Guid uuid, ShutdownRequest request, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            try
            {
                switch (request)
                {
                    case ShutdownRequest.Poweroff:
                        libxl.RequestShutdown(domid);
                        break;
                    case ShutdownRequest.Reboot:
                        libxl.RequestReboot(domid);
                        break;
                    default:
                        throw new NotSupportedException($"RequestShutdownAsync({request}) is not implemented by the Xen backend yet");
                }
                return true;
            }
            catch (LibxlNoParavirtException)
            {
                // No PV drivers in the guest to read the request.
                return false;
            }
        }, cancellationToken);

    public ValueTask<DomainState> SaveAsync(Guid uuid, Stream destination, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("SaveAsync (suspend to an image) is not implemented by the Xen backend yet");

    public ValueTask<DomainState> RestoreAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("RestoreAsync (resume from an image) is not implemented by the Xen backend yet");

    public async ValueTask DestroyAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        await OnDomainAsync(uuid, domid =>
        {
            libxl.Destroy(domid);
            return true;
        }, cancellationToken);
        _created.TryRemove(uuid, out _);
    }

    public ValueTask<DomainState> PlugVbdAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid => ConfigOf(uuid)?.Vbds.Contains(vbd) == true
            ? StateOf(uuid, domid)
            : throw new NotSupportedException($"PlugVbdAsync of {vbd.Device} outside the domain's config (hot-plug) is not implemented by the Xen backend yet"),
            cancellationToken);

    public ValueTask<DomainState> UnplugVbdAsync(Guid uuid, string device, bool force, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("UnplugVbdAsync is not implemented by the Xen backend yet");

    public ValueTask<DomainState> EjectVbdAsync(Guid uuid, string device, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("EjectVbdAsync is not implemented by the Xen backend yet");

    public ValueTask<DomainState> InsertVbdAsync(Guid uuid, string device, DiskBinding disk, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("InsertVbdAsync is not implemented by the Xen backend yet");

    public ValueTask<DomainState> PlugVifAsync(Guid uuid, VifConfig vif, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid => ConfigOf(uuid)?.Vifs.Contains(vif) == true
            ? StateOf(uuid, domid)
            : throw new NotSupportedException($"PlugVifAsync of VIF {vif.Device} outside the domain's config (hot-plug) is not implemented by the Xen backend yet"),
            cancellationToken);

    public ValueTask<DomainState> UnplugVifAsync(Guid uuid, int device, bool force, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("UnplugVifAsync is not implemented by the Xen backend yet");

    public ValueTask<DomainState> SetVcpusAsync(Guid uuid, int online, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            var vcpusMax = (int)libxl.TryGetDomain(domid)!.VcpuMaxId + 1;
            if (online < 1 || online > vcpusMax)
            {
                throw new InvalidDomainRequestException(uuid, $"{online} vCPUs online is outside 1..{vcpusMax}");
            }
            libxl.SetVcpusOnline(domid, online, vcpusMax);
            return StateOf(uuid, domid);
        }, cancellationToken);

    public ValueTask<DomainState> SetMemoryTargetAsync(Guid uuid, long targetBytes, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            if (ConfigOf(uuid)?.Memory is { } range && (targetBytes < range.DynamicMin || targetBytes > range.DynamicMax))
            {
                throw new InvalidDomainRequestException(uuid, $"memory target {targetBytes} is outside the dynamic range {range.DynamicMin}..{range.DynamicMax}");
            }
            libxl.SetMemoryTargetKib(domid, MemoryModel.KibOfBytesFree(targetBytes));
            return StateOf(uuid, domid);
        }, cancellationToken);

    public ValueTask<DomainState> SetMemoryDynamicRangeAsync(Guid uuid, long dynamicMinBytes, long dynamicMaxBytes, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("SetMemoryDynamicRangeAsync (ballooning between bounds) is not implemented by the Xen backend yet");

    public ValueTask<DomainStats> GetStatsAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            var state = StateOf(uuid, domid);
            var info = libxl.TryGetDomain(domid) ?? throw new DomainNotFoundException(uuid);
            // Per-device counters are not read yet.
            return new DomainStats(uuid, (int)domid, TimeSpan.FromTicks((long)(info.CpuTimeNs / 100)), state.MemoryActual, state.MemoryTarget, [], []);
        }, cancellationToken);

    public async ValueTask<DomainState?> TryGetDomainAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        await Task.Run(() => FindInXen(uuid) is { } info ? ToState(info) : null, cancellationToken);

    public async ValueTask<IReadOnlyList<DomainState>> ListDomainsAsync(CancellationToken cancellationToken = default) =>
        await Task.Run(ListNow, cancellationToken);

    public async ValueTask<HostMemoryInfo> GetHostMemoryAsync(CancellationToken cancellationToken = default) =>
        await Task.Run(() =>
        {
            var total = (long)libxl.GetPhysInfo().TotalPages * MemoryModel.BytesPerPage;
            var free = (long)libxl.GetFreeMemoryKib() * MemoryModel.BytesPerKib;
            var guests = libxl.ListDomains().Where(d => d.DomId != ControlDomain).Sum(d => (long)d.CurrentMemKib * MemoryModel.BytesPerKib);
            // Xen itself and dom0: what is neither free nor a guest's.
            return new HostMemoryInfo(total, Math.Max(0, total - free - guests), free);
        }, cancellationToken);

    /// <summary>
    /// Changes found by listing the domains every <see cref="XenBackendOptions.WatchInterval"/>:
    /// created, destroyed, paused, unpaused, shut down (libxl's event API is not used yet).
    /// </summary>
    public long LatestEventSequence => Interlocked.Read(ref _sequence);

    // One count across subscribers, so the numbers order events from any of them.
    private long _sequence;

    public async IAsyncEnumerable<DomainEvent> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var known = (await ListDomainsAsync(cancellationToken)).ToDictionary(d => d.Uuid);
        while (true)
        {
            await Task.Delay(_options.WatchInterval, cancellationToken);
            var now = (await ListDomainsAsync(cancellationToken)).ToDictionary(d => d.Uuid);
            foreach (var (uuid, state) in now)
            {
                DomainEventKind? kind = !known.TryGetValue(uuid, out var before) ? DomainEventKind.Created
                    : before.PowerState == state.PowerState ? null
                    : state.PowerState switch
                    {
                        DomainPowerState.Shutdown => DomainEventKind.Shutdown,
                        DomainPowerState.Paused => DomainEventKind.Paused,
                        _ => DomainEventKind.Unpaused,
                    };
                if (kind is { } k)
                {
                    yield return new DomainEvent(Interlocked.Increment(ref _sequence), k, state);
                }
            }
            foreach (var (uuid, state) in known)
            {
                if (!now.ContainsKey(uuid))
                {
                    yield return new DomainEvent(Interlocked.Increment(ref _sequence), DomainEventKind.Destroyed, state);
                }
            }
            known = now;
        }
    }

    private IReadOnlyList<DomainState> ListNow() =>
        [.. libxl.ListDomains().Where(d => d.DomId != ControlDomain).OrderBy(d => d.DomId).Select(ToState)];

    /// <summary>Runs <paramref name="action"/> on a pool thread with the VM's domid; libxl's "no such domain" becomes the seam's.</summary>
    private async ValueTask<T> OnDomainAsync<T>(Guid uuid, Func<uint, T> action, CancellationToken cancellationToken) =>
        await Task.Run(() =>
        {
            var domid = DomIdOf(uuid) ?? throw new DomainNotFoundException(uuid);
            try
            {
                return action(domid);
            }
            catch (LibxlDomainNotFoundException e)
            {
                _created.TryRemove(uuid, out _);
                throw new DomainNotFoundException(uuid) { Data = { ["libxl"] = e.Message } };
            }
        }, cancellationToken);

    private uint? DomIdOf(Guid uuid) =>
        _created.TryGetValue(uuid, out var created) && created is not null ? created.DomId : FindInXen(uuid)?.DomId;

    private DomainConfig? ConfigOf(Guid uuid) => _created.TryGetValue(uuid, out var created) ? created?.Config : null;

    private LibxlDomainInfo? FindInXen(Guid uuid) =>
        uuid == Guid.Empty ? null : libxl.ListDomains().FirstOrDefault(d => d.Uuid == uuid && d.DomId != ControlDomain);

    private DomainState StateOf(Guid uuid, uint domid) =>
        ToState(libxl.TryGetDomain(domid) ?? throw new DomainNotFoundException(uuid));

    private DomainState ToState(LibxlDomainInfo info)
    {
        var created = _created.TryGetValue(info.Uuid, out var c) && c?.DomId == info.DomId ? c : null;
        var config = created?.Config;
        var type = config?.Type ?? info.DomainType switch
        {
            Native.LibxlLayout.DomainTypeHvm => DomainType.Hvm,
            Native.LibxlLayout.DomainTypePv => DomainType.Pv,
            _ => DomainType.Pvh,
        };
        var actual = (long)info.CurrentMemKib * MemoryModel.BytesPerKib;
        long target;
        try
        {
            target = (long)libxl.GetMemoryTargetKib(info.DomId) * MemoryModel.BytesPerKib;
        }
        catch (LibxlException)
        {
            // A dying domain has no target left in xenstore.
            target = actual;
        }
        var vcpusMax = (int)info.VcpuMaxId + 1;
        return new DomainState
        {
            Uuid = info.Uuid,
            Name = config?.Name ?? libxl.DomainName(info.DomId) ?? "",
            DomId = (int)info.DomId,
            Type = type,
            PowerState = info.Shutdown || info.Dying ? DomainPowerState.Shutdown
                : info.Paused ? DomainPowerState.Paused
                : DomainPowerState.Running,
            ShutdownReason = info.Shutdown ? ReasonOf(info.ShutdownReason) : null,
            Built = true,
            MemoryActual = actual,
            MemoryTarget = target,
            MemoryOverhead = config is null ? 0 : MemoryModel.OverheadBytes(type, config.Memory.StaticMax, config.VcpusMax, config.ShadowMultiplier),
            DynamicMin = config?.Memory.DynamicMin ?? actual,
            DynamicMax = config?.Memory.DynamicMax ?? (long)info.MaxMemKib * MemoryModel.BytesPerKib,
            VcpusMax = vcpusMax,
            VcpusOnline = (int)info.VcpuOnline,
            Vbds = [.. (config?.Vbds ?? []).Select(v => new VbdState(v.Device, v.Kind, v.Mode, v.Disk))],
            Vifs = [.. (config?.Vifs ?? []).Select(v => new VifState(v.Device, v.Mac, v.Bridge))],
            GuestCounter = 0,
            ConsoleText = "",
            CreatedAt = created?.At ?? TimeSpan.Zero,
        };
    }

    private static ShutdownReason? ReasonOf(int reason) => reason switch
    {
        Native.LibxlLayout.ShutdownReasonPoweroff => Xenops.ShutdownReason.Poweroff,
        Native.LibxlLayout.ShutdownReasonReboot or Native.LibxlLayout.ShutdownReasonSoftReset => Xenops.ShutdownReason.Reboot,
        Native.LibxlLayout.ShutdownReasonSuspend => Xenops.ShutdownReason.Suspend,
        Native.LibxlLayout.ShutdownReasonCrash or Native.LibxlLayout.ShutdownReasonWatchdog => Xenops.ShutdownReason.Crash,
        _ => null,
    };
}
