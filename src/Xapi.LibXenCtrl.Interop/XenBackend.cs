using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipes;
using System.Runtime.CompilerServices;
using System.Runtime.Versioning;
using System.Text.Json.Nodes;
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

    /// <summary>
    /// Where the backend keeps its domains' configs across daemon restarts (in the data directory);
    /// null keeps them in memory only, and a domain found again after a restart cannot have its
    /// devices changed.
    /// </summary>
    public string? StateFile { get; init; }

    /// <summary>Where the QMP monitor of a domain's device model listens (libxl's socket by default).</summary>
    public Func<uint, string> MonitorPath { get; init; } = QemuMonitor.SocketPath;

    /// <summary>Where a domain's per-device I/O counters are read (dom0's sysfs).</summary>
    public XenDeviceCounters Counters { get; init; } = new();

    /// <summary>Makes sure a VIF's bridge exists in dom0 before the domain's vif joins it.</summary>
    public Action<string> EnsureBridge { get; init; } = LinuxBridges.EnsureExists;

    /// <summary>
    /// How long <see cref="XenBackend.WatchAsync"/> waits for xenstored's domain watches before it
    /// lists the domains anyway (a pause made outside the daemon fires no watch).
    /// </summary>
    public TimeSpan WatchInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The xenstored connection the watch waits on; without one the domains are listed every <see cref="WatchInterval"/>.</summary>
    public Func<XenStore?> OpenStore { get; init; } = () =>
    {
        try
        {
            return XenStore.Open();
        }
        catch (IOException)
        {
            return null;
        }
    };
}

/// <summary>
/// The seam over libxl in a Xen dom0. libxl creates, builds and attaches the config's devices in
/// one call, either booting the kernel (libxl_domain_create_new) or restoring a suspend image
/// (libxl_domain_create_restore), so <see cref="CreateAsync"/> only checks and reserves, and the
/// domain appears in Xen at <see cref="BuildAsync"/> or <see cref="RestoreAsync"/>, paused; plugging
/// a device the config already held is a no-op. Discs are inserted and ejected only in the
/// emulated drives of HVM guests, the only ones whose media libxl changes.
/// Calls block a pool thread for as long as libxl takes (create: seconds). Domains are found by
/// their VM uuid, which libxl stores as the domain's handle; dom0 is not listed.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class XenBackend(LibxlContext libxl, XenBackendOptions? options = null) : IHypervisor
{
    private const uint ControlDomain = 0;

    private readonly XenBackendOptions _options = options ?? new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private readonly Lock _stateFileGate = new();

    /// <summary>The connection guest agents' data is read through (its reads are serialised by libxenstore).</summary>
    private readonly Lazy<XenStore?> _agentStore = new(() => (options ?? new()).OpenStore());

    /// <summary>
    /// Domains of this backend by VM: a null value reserves the uuid while it is checked; an entry
    /// without a domid is created but not yet in Xen (libxl creates and builds in one call, either
    /// booting the kernel at <see cref="BuildAsync"/> or restoring an image at <see cref="RestoreAsync"/>).
    /// </summary>
    private readonly ConcurrentDictionary<Guid, Created?> _created = new(Recovered(libxl, options?.StateFile));

    /// <param name="Disks">What libxl was given for each VBD with a disk, by device key: an unplug names the guest's device.</param>
    private sealed record Created(DomainConfig Config, uint? DomId, TimeSpan At, IReadOnlyDictionary<string, XenDisk>? Disks = null);

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
                _created[config.Uuid] = new Created(config, null, _clock.Elapsed);
                return NotYetInXen(config);
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

    /// <summary>Boots the created domain's kernel: libxl creates the domain with its devices, paused.</summary>
    public async ValueTask<DomainState> BuildAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        var created = Pending(uuid, "build");
        if (created.DomId is not null)
        {
            return await OnDomainAsync(uuid, domid => StateOf(uuid, domid), cancellationToken);
        }
        var (json, disks) = await DomainJsonAsync(created.Config, cancellationToken);
        return await Task.Run(() => Enter(created with { Disks = disks }, libxl.CreateDomain(json)), cancellationToken);
    }

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
                    // libxl asks a guest only to power off, reboot or suspend: a halt is a power-off.
                    case ShutdownRequest.Poweroff or ShutdownRequest.Halt:
                        libxl.RequestShutdown(domid);
                        break;
                    case ShutdownRequest.Reboot:
                        libxl.RequestReboot(domid);
                        break;
                    case ShutdownRequest.Suspend:
                        libxl.RequestSuspend(domid);
                        break;
                }
                return true;
            }
            catch (LibxlNoParavirtException)
            {
                // No PV drivers in the guest to read the request.
                return false;
            }
        }, cancellationToken);

    // libxl can stream a live save (LIBXL_SUSPEND_LIVE) into a restore on the other host; not wired yet.
    public ValueTask<MigrationReport> MigrateSendAsync(Guid uuid, Stream destination, Action<double>? progress, CancellationToken cancellationToken = default) =>
        throw new MigrationNotSupportedException("xen");

    public ValueTask<DomainState> MigrateReceiveAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default) =>
        throw new MigrationNotSupportedException("xen");

    /// <summary>
    /// Writes this backend's header (which VM the image is of) and then libxl's own stream, which
    /// libxl writes into a pipe while it is copied to <paramref name="destination"/>: the image is
    /// never held whole in memory or in a scratch file.
    /// </summary>
    public async ValueTask<DomainState> SaveAsync(Guid uuid, Stream destination, CancellationToken cancellationToken = default)
    {
        var domid = await Task.Run(() => DomIdOf(uuid) ?? throw new DomainNotFoundException(uuid), cancellationToken);
        await XenSuspendImage.WriteHeaderAsync(destination, uuid, cancellationToken);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.None);
        var writeEnd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        var suspend = Task.Run(() =>
        {
            try
            {
                libxl.Suspend(domid, writeEnd);
            }
            finally
            {
                // The reader sees the end of the stream once libxl (and its save helper) are done.
                pipe.DisposeLocalCopyOfClientHandle();
            }
        }, CancellationToken.None);
        try
        {
            await pipe.CopyToAsync(destination, cancellationToken);
        }
        catch
        {
            // libxl's next write fails instead of blocking on a pipe nobody reads.
            pipe.Dispose();
            await suspend.ContinueWith(_ => { }, TaskScheduler.Default);
            throw;
        }
        await suspend;
        return await Task.Run(() => StateOf(uuid, domid), cancellationToken);
    }

    /// <summary>Restores an image <see cref="SaveAsync"/> wrote into the created domain: libxl reads its stream from a pipe fed from <paramref name="source"/>.</summary>
    public async ValueTask<DomainState> RestoreAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default)
    {
        var created = Pending(uuid, "restore");
        if (created.DomId is not null)
        {
            throw new DomainStateException(uuid, "restore", "a created, unbuilt domain", DomainPowerState.Running);
        }
        await XenSuspendImage.ReadHeaderAsync(source, uuid, cancellationToken);
        var (json, disks) = await DomainJsonAsync(created.Config, cancellationToken);
        created = created with { Disks = disks };
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out, HandleInheritability.None);
        var readEnd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        var restore = Task.Run(() =>
        {
            try
            {
                return libxl.RestoreDomain(json, readEnd);
            }
            finally
            {
                pipe.DisposeLocalCopyOfClientHandle();
            }
        }, CancellationToken.None);
        var feed = Task.Run(async () =>
        {
            try
            {
                await source.CopyToAsync(pipe, cancellationToken);
            }
            catch (IOException) when (restore.IsCompleted)
            {
                // libxl stopped reading (it failed, or the image holds more than its stream).
            }
            finally
            {
                pipe.Dispose();
            }
        }, CancellationToken.None);
        uint domid;
        try
        {
            domid = await restore;
        }
        catch (LibxlException e)
        {
            await feed.ContinueWith(_ => { }, TaskScheduler.Default);
            throw new SuspendImageException($"libxl could not restore the suspend image of VM {uuid}: {e.Message}", e);
        }
        await feed.ContinueWith(_ => { }, TaskScheduler.Default);
        return await Task.Run(() => Enter(created, domid), cancellationToken);
    }

    public async ValueTask DestroyAsync(Guid uuid, CancellationToken cancellationToken = default)
    {
        if (_created.TryGetValue(uuid, out var created) && created is { DomId: null } && FindInXen(uuid) is null)
        {
            // Created here but never put into Xen: nothing to tear down.
            _created.TryRemove(uuid, out _);
            return;
        }
        await OnDomainAsync(uuid, domid =>
        {
            libxl.Destroy(domid);
            return true;
        }, cancellationToken);
        _created.TryRemove(uuid, out _);
        SaveState();
    }

    /// <summary>The state file's domains that are still in Xen under the same domid (the rest are gone or were replaced).</summary>
    private static IEnumerable<KeyValuePair<Guid, Created?>> Recovered(LibxlContext libxl, string? stateFile)
    {
        if (stateFile is null)
        {
            return [];
        }
        var running = libxl.ListDomains().ToDictionary(d => d.DomId);
        return XenBackendState.Read(stateFile)
            .Where(e => running.TryGetValue(e.DomId, out var info) && info.Uuid == e.Config.Uuid && !info.Dying)
            .Select(e => KeyValuePair.Create(e.Config.Uuid, (Created?)new Created(e.Config, e.DomId, TimeSpan.Zero, e.Disks)))
            .ToList();
    }

    /// <summary>Writes the domains in Xen to the state file (a failure leaves the old file: the operation itself succeeded).</summary>
    private void SaveState()
    {
        if (_options.StateFile is not { } path)
        {
            return;
        }
        lock (_stateFileGate)
        {
            try
            {
                XenBackendState.Write(path, _created.Values
                    .Where(c => c?.DomId is not null)
                    .Select(c => new XenBackendState.Entry(c!.Config, c.DomId!.Value, c.Disks ?? new Dictionary<string, XenDisk>())));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The next change writes it again.
            }
        }
    }

    /// <summary>The created domain's entry; <see cref="DomainNotFoundException"/> when CreateAsync has not made one.</summary>
    private Created Pending(Guid uuid, string operation) =>
        _created.TryGetValue(uuid, out var created) && created is not null ? created : throw new DomainNotFoundException(uuid) { Data = { ["operation"] = operation } };

    /// <summary>libxl's config for the domain: the storage layer attaches each disk first, and each VIF's bridge is made if missing.</summary>
    private async Task<(string Json, IReadOnlyDictionary<string, XenDisk> Disks)> DomainJsonAsync(DomainConfig config, CancellationToken cancellationToken)
    {
        var disks = new Dictionary<string, XenDisk>(StringComparer.Ordinal);
        foreach (var vbd in config.Vbds)
        {
            // Called for empty drives too: an HVM guest's emulated one is given to libxl empty.
            if (await _options.Disk(config, vbd, cancellationToken) is { } disk)
            {
                disks[vbd.Device] = disk;
            }
        }
        var json = LibxlDomainJson.Build(config, _options.Boot(config), vbd => disks.GetValueOrDefault(vbd.Device));
        EnsureBridges(config.Vifs);
        return (json, disks);
    }

    /// <summary>libxl's vif-bridge hotplug script refuses a bridge that is not there.</summary>
    private void EnsureBridges(IEnumerable<VifConfig> vifs)
    {
        foreach (var bridge in vifs.Select(v => v.Bridge).Where(b => b.Length > 0).Distinct(StringComparer.Ordinal))
        {
            _options.EnsureBridge(bridge);
        }
    }

    /// <summary>Records the domain libxl made for the created entry and returns its state.</summary>
    private DomainState Enter(Created created, uint domid)
    {
        _created[created.Config.Uuid] = created with { DomId = domid, At = _clock.Elapsed };
        SaveState();
        return StateOf(created.Config.Uuid, domid);
    }

    /// <summary>A created domain before libxl has made it: paused, unbuilt, without a domid.</summary>
    private static DomainState NotYetInXen(DomainConfig config) => new()
    {
        Uuid = config.Uuid,
        Name = config.Name,
        DomId = -1,
        Type = config.Type,
        PowerState = DomainPowerState.Paused,
        Built = false,
        MemoryActual = 0,
        MemoryTarget = 0,
        MemoryOverhead = 0,
        DynamicMin = config.Memory.DynamicMin,
        DynamicMax = config.Memory.DynamicMax,
        VcpusMax = config.VcpusMax,
        VcpusOnline = config.VcpusAtStartup,
        Vbds = [.. config.Vbds.Select(v => new VbdState(v.Device, v.Kind, v.Mode, v.Disk))],
        Vifs = [.. config.Vifs.Select(v => new VifState(v.Device, v.Mac, v.Bridge))],
        GuestCounter = 0,
        ConsoleText = "",
        CreatedAt = TimeSpan.Zero,
    };

    /// <summary>
    /// A VBD the domain's config held was attached when libxl created the domain; any other is
    /// hot-plugged: the storage layer attaches its disk, libxl adds it and waits for the backend.
    /// </summary>
    public async ValueTask<DomainState> PlugVbdAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "PlugVbdAsync");
        if (created.Config.Vbds.Contains(vbd))
        {
            return await OnDomainAsync(uuid, domid => StateOf(uuid, domid), cancellationToken);
        }
        if (created.Config.Vbds.Any(v => v.Device == vbd.Device))
        {
            throw new DeviceAlreadyExistsException(uuid, vbd.Device);
        }
        var disk = vbd.Disk is null ? null
            : await _options.Disk(created.Config, vbd, cancellationToken) ?? throw new InvalidDomainRequestException(uuid, $"VBD {vbd.Device}: disk {vbd.Disk.Id} is nothing libxl can attach");
        return await OnDomainAsync(uuid, domid =>
        {
            // An empty drive has nothing for libxl to attach; it is only recorded.
            if (disk is not null)
            {
                libxl.AddDisk(domid, LibxlDomainJson.DiskEntry(vbd, disk).ToJsonString());
            }
            Record(uuid, c => c with
            {
                Config = c.Config with { Vbds = [.. c.Config.Vbds, vbd] },
                Disks = disk is null ? c.Disks : new Dictionary<string, XenDisk>(c.Disks ?? new Dictionary<string, XenDisk>()) { [vbd.Device] = disk },
            });
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    public ValueTask<DomainState> UnplugVbdAsync(Guid uuid, string device, bool force, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "UnplugVbdAsync");
        var vbd = created.Config.Vbds.FirstOrDefault(v => v.Device == device) ?? throw new DeviceNotFoundException(uuid, device);
        var disk = created.Disks?.GetValueOrDefault(device);
        return OnDomainAsync(uuid, domid =>
        {
            if (disk is not null)
            {
                libxl.RemoveDisk(domid, disk.GuestDevice ?? device, force);
            }
            Record(uuid, c => c with
            {
                Config = c.Config with { Vbds = [.. c.Config.Vbds.Where(v => v.Device != device)] },
                Disks = c.Disks?.Where(d => d.Key != device).ToDictionary(d => d.Key, d => d.Value, StringComparer.Ordinal),
            });
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    /// <summary>qemu drops the disc of the HVM guest's emulated drive; the drive stays, and the guest sees a media change.</summary>
    public ValueTask<DomainState> EjectVbdAsync(Guid uuid, string device, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "EjectVbdAsync");
        var (vbd, drive) = EmulatedDrive(created, device);
        if (vbd.Disk is null)
        {
            throw new MediaException(uuid, device, "the drive is empty");
        }
        var emptied = XenDisk.EmptyDrive(drive);
        return OnDomainAsync(uuid, domid =>
        {
            AskDeviceModel(domid, "eject", new JsonObject { ["id"] = XenDisk.EmulatedDriveId(drive), ["force"] = true });
            RecordMedia(uuid, vbd with { Disk = null }, emptied);
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    /// <summary>The storage layer attaches the disc's disk, and qemu puts it into the HVM guest's empty emulated drive.</summary>
    public async ValueTask<DomainState> InsertVbdAsync(Guid uuid, string device, DiskBinding disk, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "InsertVbdAsync");
        var (vbd, drive) = EmulatedDrive(created, device);
        if (vbd.Disk is not null)
        {
            throw new MediaException(uuid, device, "the drive is not empty");
        }
        var inserted = vbd with { Disk = disk };
        var attached = await _options.Disk(created.Config, inserted, cancellationToken)
            ?? throw new InvalidDomainRequestException(uuid, $"VBD {device}: disk {disk.Id} is nothing libxl can attach");
        // qemu opens the image itself for an emulated drive, whatever serves the guest's PV disks.
        var disc = attached with { Backend = XenDisk.QdiskBackend, GuestDevice = drive };
        return await OnDomainAsync(uuid, domid =>
        {
            AskDeviceModel(domid, "blockdev-change-medium", new JsonObject
            {
                ["id"] = XenDisk.EmulatedDriveId(drive),
                ["filename"] = disc.Target,
                ["format"] = disc.Format,
                ["read-only-mode"] = inserted.Mode == VbdMode.ReadWrite ? "read-write" : "read-only",
            });
            RecordMedia(uuid, inserted, disc);
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    /// <summary>One QMP command to the domain's device model, on a connection of its own (qemu serves one client at a time).</summary>
    private void AskDeviceModel(uint domid, string command, JsonObject arguments)
    {
        using var monitor = QemuMonitor.Connect(_options.MonitorPath(domid));
        monitor.Execute(command, arguments);
    }

    /// <summary>
    /// A removable drive of the domain that qemu emulates, and the guest's name for it. Only HVM
    /// guests have such drives (a PV guest's disc is unplugged and plugged instead), and only the
    /// drives the domain was created with: qemu cannot add one later.
    /// </summary>
    private static (VbdConfig Vbd, string GuestDevice) EmulatedDrive(Created created, string device)
    {
        var uuid = created.Config.Uuid;
        var vbd = created.Config.Vbds.FirstOrDefault(v => v.Device == device) ?? throw new DeviceNotFoundException(uuid, device);
        if (vbd.Kind == VbdKind.Disk)
        {
            throw new MediaException(uuid, device, "not a removable drive");
        }
        if (created.Config.Type != DomainType.Hvm)
        {
            throw new MediaException(uuid, device, "only an HVM guest's emulated drives change media");
        }
        return created.Disks?.GetValueOrDefault(device)?.GuestDevice is { } guestDevice
            ? (vbd, guestDevice)
            : throw new MediaException(uuid, device, "the domain was created without an emulated drive for it");
    }

    private void RecordMedia(Guid uuid, VbdConfig vbd, XenDisk disk) => Record(uuid, c => c with
    {
        Config = c.Config with { Vbds = [.. c.Config.Vbds.Select(v => v.Device == vbd.Device ? vbd : v)] },
        Disks = new Dictionary<string, XenDisk>(c.Disks ?? new Dictionary<string, XenDisk>(), StringComparer.Ordinal) { [vbd.Device] = disk },
    });

    /// <summary>As <see cref="PlugVbdAsync"/>: a VIF outside the config is hot-plugged onto its bridge, made first if missing.</summary>
    public ValueTask<DomainState> PlugVifAsync(Guid uuid, VifConfig vif, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "PlugVifAsync");
        if (created.Config.Vifs.Contains(vif))
        {
            return OnDomainAsync(uuid, domid => StateOf(uuid, domid), cancellationToken);
        }
        if (created.Config.Vifs.Any(v => v.Device == vif.Device))
        {
            throw new DeviceAlreadyExistsException(uuid, vif.Device.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return OnDomainAsync(uuid, domid =>
        {
            EnsureBridges([vif]);
            libxl.AddNic(domid, LibxlDomainJson.NicEntry(vif).ToJsonString());
            Record(uuid, c => c with { Config = c.Config with { Vifs = [.. c.Config.Vifs, vif] } });
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    public ValueTask<DomainState> UnplugVifAsync(Guid uuid, int device, bool force, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "UnplugVifAsync");
        if (!created.Config.Vifs.Any(v => v.Device == device))
        {
            throw new DeviceNotFoundException(uuid, device.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return OnDomainAsync(uuid, domid =>
        {
            libxl.RemoveNic(domid, device, force);
            Record(uuid, c => c with { Config = c.Config with { Vifs = [.. c.Config.Vifs.Where(v => v.Device != device)] } });
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    /// <summary>The entry of a domain this backend put into Xen; a domain found again after a restart has none, so its devices cannot be changed yet.</summary>
    private Created Running(Guid uuid, string operation) =>
        _created.TryGetValue(uuid, out var created) && created is { DomId: not null } ? created
        : FindInXen(uuid) is null ? throw new DomainNotFoundException(uuid)
        : throw new NotSupportedException($"{operation} on a domain this daemon did not create (found again after a restart) is not implemented by the Xen backend yet");

    private void Record(Guid uuid, Func<Created, Created> change)
    {
        if (_created.TryGetValue(uuid, out var created) && created is not null)
        {
            _created[uuid] = change(created);
            SaveState();
        }
    }

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

    /// <summary>
    /// Records the new range (it bounds later targets) and moves the balloon target into it; with no
    /// squeezing of other domains yet, a target outside the range goes to its nearest end.
    /// </summary>
    public ValueTask<DomainState> SetMemoryDynamicRangeAsync(Guid uuid, long dynamicMinBytes, long dynamicMaxBytes, CancellationToken cancellationToken = default)
    {
        var created = Running(uuid, "SetMemoryDynamicRangeAsync");
        var memory = created.Config.Memory with { DynamicMin = dynamicMinBytes, DynamicMax = dynamicMaxBytes };
        if (!memory.IsOrdered)
        {
            throw new InvalidDomainRequestException(uuid, $"dynamic range {dynamicMinBytes}..{dynamicMaxBytes} is not within the static range {memory.StaticMin}..{memory.StaticMax}");
        }
        return OnDomainAsync(uuid, domid =>
        {
            Record(uuid, c => c with { Config = c.Config with { Memory = memory } });
            var targetKib = libxl.GetMemoryTargetKib(domid);
            var clamped = Math.Clamp((long)targetKib, MemoryModel.KibOfBytesFree(dynamicMinBytes), MemoryModel.KibOfBytesFree(dynamicMaxBytes));
            if (clamped != (long)targetKib)
            {
                libxl.SetMemoryTargetKib(domid, clamped);
            }
            return StateOf(uuid, domid);
        }, cancellationToken);
    }

    public ValueTask<DomainStats> GetStatsAsync(Guid uuid, CancellationToken cancellationToken = default) =>
        OnDomainAsync(uuid, domid =>
        {
            var state = StateOf(uuid, domid);
            var info = libxl.TryGetDomain(domid) ?? throw new DomainNotFoundException(uuid);
            var disks = _created.TryGetValue(uuid, out var created) ? created?.Disks : null;
            return new DomainStats(uuid, (int)domid, TimeSpan.FromTicks((long)(info.CpuTimeNs / 100)), state.MemoryActual, state.MemoryTarget,
                [.. state.Vbds.Select(v => _options.Counters.Vbd(domid, v.Device, disks?.GetValueOrDefault(v.Device)?.GuestDevice ?? v.Device))],
                [.. state.Vifs.Select(v => _options.Counters.Vif(domid, v.Device))]);
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
    /// Changes found by listing the domains whenever xenstored says a domain was introduced, shut
    /// down or died, and every <see cref="XenBackendOptions.WatchInterval"/> besides: created,
    /// destroyed, paused, unpaused, shut down.
    /// </summary>
    public long LatestEventSequence => Interlocked.Read(ref _sequence);

    // One count across subscribers, so the numbers order events from any of them.
    private long _sequence;

    /// <summary>Each wait on xenstored is this short, so a cancelled watch stops within it.</summary>
    private static readonly TimeSpan WatchSlice = TimeSpan.FromMilliseconds(250);

    public async IAsyncEnumerable<DomainEvent> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var store = _options.OpenStore();
        var known = (await ListDomainsAsync(cancellationToken)).ToDictionary(d => d.Uuid);
        while (true)
        {
            await WaitForChangeAsync(store, cancellationToken);
            var now = (await ListDomainsAsync(cancellationToken)).ToDictionary(d => d.Uuid);
            foreach (var (uuid, state) in now)
            {
                DomainEventKind? kind = !known.TryGetValue(uuid, out var before) ? DomainEventKind.Created
                    : before.PowerState != state.PowerState ? state.PowerState switch
                    {
                        DomainPowerState.Shutdown => DomainEventKind.Shutdown,
                        DomainPowerState.Paused => DomainEventKind.Paused,
                        _ => DomainEventKind.Unpaused,
                    }
                    // A domain that has stopped is folded only through its Shutdown and Destroyed events:
                    // its memory drains while it dies, and that is no change of a live VM.
                    : state.PowerState == DomainPowerState.Shutdown ? null
                    : !SameAgentData(before.GuestAgent, state.GuestAgent) ? DomainEventKind.GuestAgentChanged
                    : before.MemoryActual != state.MemoryActual || before.MemoryTarget != state.MemoryTarget ? DomainEventKind.MemoryChanged
                    : null;
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

    private static bool SameAgentData(GuestAgentData? a, GuestAgentData? b) =>
        a is null || b is null ? a is null && b is null
        : a.PvDriversDetected == b.PvDriversDetected && a.Xenstore.Count == b.Xenstore.Count
          && a.Xenstore.All(entry => b.Xenstore.TryGetValue(entry.Key, out var value) && value == entry.Value);

    private async Task WaitForChangeAsync(XenStore? store, CancellationToken cancellationToken)
    {
        if (store is null)
        {
            await Task.Delay(_options.WatchInterval, cancellationToken);
            return;
        }
        var waited = Stopwatch.StartNew();
        // Each slice is awaited to its end, so the store is never disposed under a wait.
        while (!await Task.Run(() => store.WaitForDomainChange(WatchSlice), CancellationToken.None) && waited.Elapsed < _options.WatchInterval)
        {
            cancellationToken.ThrowIfCancellationRequested();
        }
        cancellationToken.ThrowIfCancellationRequested();
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

    /// <summary>
    /// The domain libxl made for the VM, else the one Xen lists for it: a create libxl abandoned
    /// half-way leaves a domain this backend has no domid for, and a destroy must still find it.
    /// </summary>
    private uint? DomIdOf(Guid uuid) =>
        (_created.TryGetValue(uuid, out var created) ? created?.DomId : null) ?? FindInXen(uuid)?.DomId;

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
            // A domain that has stopped has no agent any more.
            GuestAgent = info.Shutdown || info.Dying || _agentStore.Value is not { } store ? null : XenGuestAgent.Read(store, info.DomId),
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
