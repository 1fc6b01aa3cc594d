using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Operations;
using Xapi.Xenops;
using Xapi.Xenops.Guest;
using Xapi.Xenops.Orchestration;

namespace Xapi.Server.Api;

/// <summary>
/// The daemon's side of the hypervisor seam (xapi_xenops.ml): the one place where what the
/// backend reports becomes database rows, the per-VM exclusion between API operations and the
/// daemon's own reactions to guests (actions_after_*), and the reconciliation of the database with
/// the backend at start-up and after lost events.
/// </summary>
/// <remarks>
/// While an operation holds a VM, backend events about it are not folded: a reboot's destroyed
/// domain must not show the VM Halted for a moment. The operation folds the backend's state once it
/// is done, and events older than that fold are skipped, so a late event cannot undo it.
/// </remarks>
public sealed partial class VmRuntime : IDomainEventSink, IAsyncDisposable
{
    // A guest that crashes this soon after its domain started is not restarted: a crash loop ends
    // Halted (xenopsd, for Xen: 120 s).
    private static readonly TimeSpan MinimumRunBeforeCrashRestart = TimeSpan.FromSeconds(120);

    // Where a host serves its VMs' consoles (constants.ml console_uri).
    private const string ConsolePath = "/console";

    private readonly XapiDatabase _database;
    private readonly TimeProvider _time;
    private readonly ILogger<VmRuntime> _logger;
    private readonly ConcurrentDictionary<Guid, SemaphoreSlim> _locks = new();
    private readonly ConcurrentDictionary<Guid, HoldState> _held = new();
    // The newest backend event each VM's rows reflect. Read and written only inside database write
    // transactions, which run one at a time: checking an event against it and folding it are one step,
    // so an event cannot pass the check and then land after a newer fold.
    private readonly Dictionary<Guid, long> _foldedUpTo = [];
    // The newest event about a held VM, folded when the hold ends; guarded by _handoff with _held.
    private readonly Dictionary<Guid, DomainEvent> _deferred = [];
    private readonly Lock _handoff = new();
    private readonly ConcurrentDictionary<(Guid Uuid, int DomId), byte> _reactions = new();
    private readonly ConcurrentDictionary<Guid, byte> _reportedUnknown = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _background = [];

    public VmRuntime(IHypervisor hypervisor, XapiDatabase database, TimeProvider time, ILoggerFactory loggers)
    {
        Hypervisor = hypervisor;
        _database = database;
        _time = time;
        _logger = loggers.CreateLogger<VmRuntime>();
        Watcher = new DomainWatcher(hypervisor, this, loggers.CreateLogger<DomainWatcher>());
        Orchestrator = new VmOrchestrator(hypervisor, Watcher);
    }

    public IHypervisor Hypervisor { get; }

    public DomainWatcher Watcher { get; }

    public VmOrchestrator Orchestrator { get; }

    /// <summary>How long a clean shutdown or reboot waits for the guest (xapi_globs.ml domain_shutdown_total_timeout).</summary>
    public TimeSpan GuestShutdownTimeout { get; init; } = TimeSpan.FromSeconds(1200);

    /// <summary>The host this daemon is; VMs with a domain here are resident on it.</summary>
    public HostRef ThisHost { get; set; } = HostRef.Null;

    /// <summary>Reconciles the database with the backend's domains, then follows the backend's events.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // Subscribed first, so no change between the reconciliation and the first event is lost.
        Watcher.Start();
        await ResynchroniseAsync(cancellationToken);
    }

    /// <summary>
    /// Holds the VM against the daemon's own reactions and other holders until disposed.
    /// <paramref name="preempt"/> cancels the present holder first (a hard shutdown does not wait
    /// for a clean one the guest ignores).
    /// </summary>
    public async ValueTask<Hold> HoldAsync(Guid uuid, CancellationToken cancellationToken, bool preempt = false)
    {
        var gate = _locks.GetOrAdd(uuid, _ => new SemaphoreSlim(1, 1));
        if (preempt && _held.TryGetValue(uuid, out var holder))
        {
            try
            {
                holder.Preempted = true;
                await holder.Cancellation.CancelAsync();
            }
            catch (ObjectDisposedException)
            {
                // It let go meanwhile.
            }
        }
        await gate.WaitAsync(cancellationToken);
        var state = new HoldState(CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token));
        lock (_handoff)
        {
            _held[uuid] = state;
        }
        return new Hold(this, uuid, gate, state);
    }

    /// <summary>
    /// Holds the VM, runs one orchestration on it and folds the backend's state afterwards, whatever
    /// happened (xapi's with_vm_operation around a xenopsd call): backend failures become XenAPI
    /// errors, and a hard operation taking over becomes TASK_CANCELLED.
    /// </summary>
    public async ValueTask RunAsync(Dispatch.CallContext context, VMRef vm, Guid uuid, Func<CancellationToken, ValueTask> operation, bool preempt = false)
    {
        await using var hold = await HoldAsync(uuid, context.Cancellation, preempt);
        await RunHeldAsync(context, vm, uuid, hold, operation);
    }

    /// <summary>The same on a VM the caller holds already (it checked something under the hold first).</summary>
    public async ValueTask RunHeldAsync(Dispatch.CallContext context, VMRef vm, Guid uuid, Hold hold, Func<CancellationToken, ValueTask> operation)
    {
        try
        {
            await operation(hold.Token);
        }
        catch (XenopsException e)
        {
            throw XenopsErrors.ToXenApi(e, vm);
        }
        catch (OperationCanceledException) when (hold.Preempted)
        {
            throw XenopsErrors.Cancelled(context);
        }
        finally
        {
            await SyncAsync(vm, uuid, VmPowerState.Halted, CancellationToken.None);
        }
    }

    /// <summary>
    /// Folds the backend's present state of a VM into the database: its domain, or, when it has
    /// none, <paramref name="whenGone"/> (Halted, or Suspended after a suspend).
    /// </summary>
    public async ValueTask SyncAsync(VMRef vm, Guid uuid, VmPowerState whenGone, CancellationToken cancellationToken)
    {
        // Read in this order: the state is at least as new as the sequence, so skipping events up to it loses nothing.
        var sequence = Hypervisor.LatestEventSequence;
        var state = await Hypervisor.TryGetDomainAsync(uuid, cancellationToken);
        _database.Write(tx =>
        {
            FoldedUpTo(uuid, sequence);
            if (tx.Exists(vm))
            {
                Fold(tx, vm, state, whenGone);
            }
        });
        if (state is { PowerState: DomainPowerState.Shutdown })
        {
            React(vm, state);
        }
        await RefreshHostMemoryAsync(cancellationToken);
        // A write that changed nothing has no generation of its own: wait for everything committed so far.
        await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken);
    }

    /// <summary>
    /// The VM's guest left this host (migrated away, or a migration into it was given up): what its
    /// domain here did so far is not folded into the VM's rows, which another host keeps now.
    /// </summary>
    public void ForgetEvents(Guid uuid)
    {
        var sequence = Hypervisor.LatestEventSequence;
        _database.Write(_ => FoldedUpTo(uuid, sequence));
    }

    ValueTask IDomainEventSink.OnEventAsync(DomainEvent domainEvent, CancellationToken cancellationToken)
    {
        lock (_handoff)
        {
            if (_held.ContainsKey(domainEvent.State.Uuid))
            {
                _deferred[domainEvent.State.Uuid] = domainEvent;
                return ValueTask.CompletedTask;
            }
        }
        Apply(domainEvent);
        return ValueTask.CompletedTask;
    }

    private void Release(Guid uuid, HoldState holder)
    {
        DomainEvent? deferred;
        lock (_handoff)
        {
            _held.TryRemove(new KeyValuePair<Guid, HoldState>(uuid, holder));
            _deferred.Remove(uuid, out deferred);
        }
        if (deferred is not null)
        {
            // What changed after the holder's last look (a balloon moving, the agent appearing) is not lost.
            Apply(deferred);
        }
    }

    private void Apply(DomainEvent domainEvent)
    {
        var uuid = domainEvent.State.Uuid;
        if (!TryFind(uuid, out var vm))
        {
            ReportUnknown(domainEvent.State);
            return;
        }
        var gone = domainEvent.Kind == DomainEventKind.Destroyed;
        var whenGone = gone && domainEvent.State.ShutdownReason == ShutdownReason.Suspend ? VmPowerState.Suspended : VmPowerState.Halted;
        var newest = _database.Write(tx =>
        {
            if (!FoldedUpTo(uuid, domainEvent.Sequence))
            {
                // Older than what the rows already show.
                return false;
            }
            if (domainEvent.Kind != DomainEventKind.Shutdown && tx.Exists(vm))
            {
                Fold(tx, vm, gone ? null : domainEvent.State, whenGone);
            }
            return true;
        });
        if (newest && domainEvent.Kind == DomainEventKind.Shutdown)
        {
            // What happens next is the VM's actions_after_*; until then it keeps its recorded state.
            React(vm, domainEvent.State);
        }
    }

    /// <summary>Re-reads every domain and every VM this host runs (at start-up, and after lost events).</summary>
    public async ValueTask ResynchroniseAsync(CancellationToken cancellationToken)
    {
        var sequence = Hypervisor.LatestEventSequence;
        var domains = await Hypervisor.ListDomainsAsync(cancellationToken);
        var byUuid = domains.ToDictionary(d => d.Uuid);
        var reactions = new List<(VMRef, DomainState)>();
        _database.Write(tx =>
        {
            foreach (var vm in tx.All<VMRecord>().Where(v => !v.IsControlDomain).ToList())
            {
                if (!Guid.TryParse(vm.Uuid, out var uuid) || _held.ContainsKey(uuid))
                {
                    continue;
                }
                FoldedUpTo(uuid, sequence);
                if (byUuid.Remove(uuid, out var state))
                {
                    Fold(tx, vm.Ref, state, VmPowerState.Halted);
                    if (state.PowerState == DomainPowerState.Shutdown)
                    {
                        reactions.Add((vm.Ref, state));
                    }
                }
                else if (vm.PowerState is VmPowerState.Running or VmPowerState.Paused && (vm.ResidentOn == ThisHost || vm.ResidentOn.IsNull))
                {
                    LogDomainVanished(vm.Uuid, vm.NameLabel);
                    Fold(tx, vm.Ref, null, VmPowerState.Halted);
                }
            }
        });
        foreach (var (vm, state) in reactions)
        {
            React(vm, state);
        }
        foreach (var unknown in byUuid.Values)
        {
            ReportUnknown(unknown);
        }
        await RefreshHostMemoryAsync(cancellationToken);
        // A write that changed nothing has no generation of its own: wait for everything committed so far.
        await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken);
    }

    /// <summary>host_metrics' memory as the backend counts it, after each operation that may have changed it.</summary>
    private async ValueTask RefreshHostMemoryAsync(CancellationToken cancellationToken)
    {
        var memory = await Hypervisor.GetHostMemoryAsync(cancellationToken);
        _database.Write(tx =>
        {
            if (!tx.TryGet(ThisHost, out var host) || !tx.TryGet(host.Metrics, out var metrics))
            {
                return;
            }
            if (metrics.MemoryTotal != memory.Total || metrics.MemoryFree != memory.Free)
            {
                tx.Update(host.Metrics, m =>
                {
                    m.MemoryTotal = memory.Total;
                    m.MemoryFree = memory.Free;
                });
            }
        });
    }

    /// <summary>
    /// Records that a VM's rows now reflect the backend up to <paramref name="sequence"/>; false when
    /// they already reflect that or later. Call only inside a database write transaction.
    /// </summary>
    private bool FoldedUpTo(Guid uuid, long sequence)
    {
        if (_foldedUpTo.TryGetValue(uuid, out var folded) && sequence <= folded)
        {
            return false;
        }
        _foldedUpTo[uuid] = sequence;
        return true;
    }

    private bool TryFind(Guid uuid, out VMRef vm)
    {
        if (_database.Snapshot.TryGetByUuid(VMRef.Class, uuid.ToString("D"), out var row))
        {
            vm = new VMRef(row.Ref);
            return true;
        }
        vm = VMRef.Null;
        return false;
    }

    private void ReportUnknown(DomainState state)
    {
        if (_reportedUnknown.TryAdd(state.Uuid, 0))
        {
            // Real hosts shut such domains down; a domain may hold a guest's only copy of its state, so it is left running and reported.
            LogUnknownDomain(state.Uuid, state.DomId, state.Name);
        }
    }

    /// <summary>
    /// Writes one VM's backend state into its rows (update_vm_internal): power state, domid,
    /// residence, memory target, metrics, device attachment, guest metrics; then its allowed operations.
    /// </summary>
    private void Fold(Transaction tx, VMRef vm, DomainState? state, VmPowerState whenGone)
    {
        var record = tx.Get(vm);
        if (state is null)
        {
            FoldGone(tx, record, whenGone);
        }
        else
        {
            FoldLive(tx, record, state);
        }
        VMApi.RefreshAllowedOperations(tx, vm);
    }

    private void FoldGone(Transaction tx, VMRecord vm, VmPowerState whenGone) =>
        // The event path keeps operations in progress: the one that stopped the domain is still running.
        ResetState(tx, vm.Ref, whenGone, keepCurrentOperations: true);

    /// <summary>
    /// force_state_reset for a VM left with no domain (xapi_vm_lifecycle.ml): no domid, no residence,
    /// no consoles; Halted also detaches its devices, while a Suspended VM's disks stay in use.
    /// Without <paramref name="keepCurrentOperations"/> the VM's and its devices' operations are forgotten too.
    /// The caller recomputes allowed operations.
    /// </summary>
    public void ResetState(Transaction tx, VMRef vm, VmPowerState state, bool keepCurrentOperations)
    {
        var record = tx.Get(vm);
        var halted = state == VmPowerState.Halted;
        tx.Update(vm, v =>
        {
            v.PowerState = state;
            v.Domid = -1;
            v.ResidentOn = HostRef.Null;
            v.ScheduledToBeResidentOn = HostRef.Null;
            if (halted)
            {
                v.RequiresReboot = false;
            }
            if (!keepCurrentOperations)
            {
                v.CurrentOperations = ValueMap.Empty;
            }
        });
        FoldConsoles(tx, record, null);
        if (!halted)
        {
            return;
        }
        foreach (var vbd in record.VBDs.Where(tx.Exists))
        {
            if (tx.Get(vbd) is { CurrentlyAttached: true } || (!keepCurrentOperations && tx.Get(vbd).CurrentOperations.Count > 0))
            {
                tx.Update(vbd, b =>
                {
                    b.CurrentlyAttached = false;
                    if (!keepCurrentOperations)
                    {
                        b.CurrentOperations = ValueMap.Empty;
                    }
                });
            }
        }
        foreach (var vif in record.VIFs.Where(tx.Exists))
        {
            if (tx.Get(vif) is { CurrentlyAttached: true } || (!keepCurrentOperations && tx.Get(vif).CurrentOperations.Count > 0))
            {
                tx.Update(vif, f =>
                {
                    f.CurrentlyAttached = false;
                    if (!keepCurrentOperations)
                    {
                        f.CurrentOperations = ValueMap.Empty;
                    }
                });
            }
        }
    }

    private void FoldLive(Transaction tx, VMRecord vm, DomainState state)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var newDomain = vm.Domid != state.DomId;
        var power = state.PowerState == DomainPowerState.Running ? VmPowerState.Running : VmPowerState.Paused;
        if (vm.PowerState != power || newDomain || vm.ResidentOn != ThisHost || !vm.ScheduledToBeResidentOn.IsNull || vm.MemoryTarget != state.MemoryTarget)
        {
            tx.Update(vm.Ref, v =>
            {
                v.PowerState = power;
                v.Domid = state.DomId;
                v.ResidentOn = ThisHost;
                v.ScheduledToBeResidentOn = HostRef.Null;
                v.MemoryTarget = state.MemoryTarget;
            });
        }
        var domainType = DomainConfigs.Model(state.Type);
        if (tx.Exists(vm.Metrics))
        {
            var metrics = tx.Get(vm.Metrics);
            if (newDomain || metrics.MemoryActual != state.MemoryActual || metrics.VCPUsNumber != state.VcpusOnline || metrics.CurrentDomainType != domainType)
            {
                tx.Update(vm.Metrics, m =>
                {
                    m.MemoryActual = state.MemoryActual;
                    m.VCPUsNumber = state.VcpusOnline;
                    m.CurrentDomainType = domainType;
                    m.Hvm = domainType == Xapi.Model.DomainType.Hvm;
                    m.LastUpdated = now;
                    if (newDomain)
                    {
                        m.StartTime = now;
                    }
                });
            }
        }
        FoldDevices(tx, vm, state);
        FoldConsoles(tx, vm, state);
        FoldGuestAgent(tx, tx.Get(vm.Ref), state, newDomain, now);
    }

    /// <summary>
    /// One console per domain, at <c>https://&lt;host address&gt;/console?uuid=&lt;console uuid&gt;</c>
    /// (xapi_xenops.ml): a graphical one (rfb) for HVM, a text one (vt100) otherwise; none without a
    /// domain. A console whose protocol or host address no longer matches is replaced.
    /// </summary>
    private void FoldConsoles(Transaction tx, VMRecord vm, DomainState? state)
    {
        ConsoleProtocol? wanted = state is null ? null : state.Type == Xapi.Xenops.DomainType.Hvm ? ConsoleProtocol.Rfb : ConsoleProtocol.Vt100;
        var address = tx.TryGet(ThisHost, out var host) ? host.Address : "";
        // An IPv6 address is bracketed in a URI.
        var uri = $"https://{(address.Contains(':', StringComparison.Ordinal) ? $"[{address}]" : address)}{ConsolePath}";
        var kept = false;
        foreach (var console in vm.Consoles.Where(tx.Exists).ToList())
        {
            var record = tx.Get(console);
            if (!kept && record.Protocol == wanted && record.Location.StartsWith(uri + "?", StringComparison.Ordinal))
            {
                kept = true;
                continue;
            }
            tx.Delete(console);
        }
        if (wanted is { } protocol && !kept)
        {
            tx.CreateConsole(c =>
            {
                c.Uuid = Guid.NewGuid().ToString("D");
                c.Protocol = protocol;
                c.Location = $"{uri}?uuid={c.Uuid}";
                c.VM = vm.Ref;
                c.OtherConfig = ValueMap.Empty;
            });
        }
    }

    private static void FoldDevices(Transaction tx, VMRecord vm, DomainState state)
    {
        var hvm = vm.DomainType == Xapi.Model.DomainType.Hvm;
        var plugged = state.Vbds.ToDictionary(v => v.Device, StringComparer.Ordinal);
        foreach (var vbd in vm.VBDs.Where(tx.Exists))
        {
            var record = tx.Get(vbd);
            var attached = plugged.TryGetValue(DomainConfigs.DeviceKey(record), out var backend);
            var device = attached && DeviceNumber.Parse(record.Userdevice, hvm) is { } number ? number.ToLinuxDevice() : record.Device;
            if (record.CurrentlyAttached != attached || record.Device != device)
            {
                tx.Update(vbd, b =>
                {
                    b.CurrentlyAttached = attached;
                    b.Device = device;
                });
            }
            if (backend is { Kind: not VbdKind.Disk })
            {
                FoldMedia(tx, record, backend.Disk);
            }
        }
        var vifs = state.Vifs.Select(v => v.Device.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToHashSet(StringComparer.Ordinal);
        foreach (var vif in vm.VIFs.Where(tx.Exists))
        {
            var attached = vifs.Contains(tx.Get(vif).Device);
            if (tx.Get(vif).CurrentlyAttached != attached)
            {
                tx.Update(vif, f => f.CurrentlyAttached = attached);
            }
        }
    }

    /// <summary>What a plugged removable drive holds is what the backend says it holds (after an insert or eject).</summary>
    private static void FoldMedia(Transaction tx, VBDRecord vbd, DiskBinding? disk)
    {
        var vdi = VDIRef.Null;
        if (disk is not null)
        {
            if (!tx.TryGetByUuid(VDIRef.Class, disk.Id, out var row))
            {
                // A disk the database no longer knows: nothing better to record than what it says.
                return;
            }
            vdi = new VDIRef(row.Ref);
        }
        var empty = disk is null;
        if (vbd.Empty != empty || vbd.VDI != vdi)
        {
            tx.Update(vbd.Ref, b =>
            {
                b.Empty = empty;
                b.VDI = vdi;
            });
        }
    }

    private static void FoldGuestAgent(Transaction tx, VMRecord vm, DomainState state, bool newDomain, DateTime now)
    {
        var existing = vm.GuestMetrics;
        if (newDomain && !existing.IsNull)
        {
            // A new domain's guest has not reported yet: what the last one said is gone (VM.start deletes it).
            if (tx.Exists(existing))
            {
                tx.Delete(existing);
            }
            tx.Update(vm.Ref, v => v.GuestMetrics = VMGuestMetricsRef.Null);
            existing = VMGuestMetricsRef.Null;
        }
        if (state.GuestAgent is not { } agent)
        {
            return;
        }
        var parsed = GuestAgentParser.Parse(agent.Xenstore);
        if (!existing.IsNull && tx.Exists(existing))
        {
            var current = tx.Get(existing);
            if (Same(current.OsVersion, parsed.OsVersion) && Same(current.PVDriversVersion, parsed.PvDriversVersion) && Same(current.Networks, parsed.Networks)
                && Same(current.Other, parsed.Other) && Same(current.NetbiosName, parsed.NetbiosName) && current.PVDriversDetected == agent.PvDriversDetected
                && current.CanUseHotplugVbd == parsed.CanUseHotplugVbd && current.CanUseHotplugVif == parsed.CanUseHotplugVif)
            {
                return;
            }
            tx.Update(existing, m => Fill(m, parsed, agent, now));
            return;
        }
        var created = tx.CreateVMGuestMetrics(m =>
        {
            m.Uuid = Guid.NewGuid().ToString("D");
            m.Memory = ValueMap.Empty;
            m.Disks = ValueMap.Empty;
            m.OtherConfig = ValueMap.Empty;
            m.Services = ValueMap.Empty;
            m.Live = true;
            Fill(m, parsed, agent, now);
        });
        tx.Update(vm.Ref, v => v.GuestMetrics = created);
    }

    private static void Fill(VMGuestMetricsValues m, GuestMetrics parsed, GuestAgentData agent, DateTime now)
    {
        m.OsVersion = Map(parsed.OsVersion);
        m.PVDriversVersion = Map(parsed.PvDriversVersion);
        m.Networks = Map(parsed.Networks);
        m.Other = Map(parsed.Other);
        m.NetbiosName = Map(parsed.NetbiosName);
        m.PVDriversDetected = agent.PvDriversDetected;
        m.PVDriversUpToDate = agent.PvDriversDetected;
        m.CanUseHotplugVbd = parsed.CanUseHotplugVbd;
        m.CanUseHotplugVif = parsed.CanUseHotplugVif;
        m.LastUpdated = now;
    }

    private static ValueMap Map(IReadOnlyDictionary<string, string> map) =>
        ValueMap.FromPairs(map.Select(p => new KeyValuePair<object, object?>(p.Key, p.Value)));

    private static bool Same(ValueMap stored, IReadOnlyDictionary<string, string> reported) =>
        stored.Count == reported.Count && reported.All(p => stored.TryGetValue(p.Key, out var v) && v is string s && s == p.Value);

    /// <summary>
    /// A guest stopped by itself: the VM's actions_after_shutdown, _reboot or _crash decide what
    /// follows, once whatever operation holds the VM lets go. Each domain is reacted to once.
    /// </summary>
    private void React(VMRef vm, DomainState state)
    {
        if (!_reactions.TryAdd((state.Uuid, state.DomId), 0))
        {
            return;
        }
        var task = Task.Run(async () =>
        {
            try
            {
                await ReactAsync(vm, state, _stopping.Token);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
            }
            catch (Exception e)
            {
                LogReactionFailed(e, state.Uuid, state.ShutdownReason);
            }
            finally
            {
                _reactions.TryRemove((state.Uuid, state.DomId), out _);
            }
        });
        lock (_background)
        {
            _background.RemoveAll(t => t.IsCompleted);
            _background.Add(task);
        }
    }

    private async Task ReactAsync(VMRef vm, DomainState stopped, CancellationToken cancellationToken)
    {
        await using var hold = await HoldAsync(stopped.Uuid, cancellationToken);
        var current = await Hypervisor.TryGetDomainAsync(stopped.Uuid, cancellationToken);
        if (current is null || current.DomId != stopped.DomId || current.PowerState != DomainPowerState.Shutdown || !_database.Snapshot.Exists(vm))
        {
            // An operation dealt with it meanwhile (a clean shutdown destroys the domain it asked to stop).
            return;
        }
        var record = _database.Snapshot.Get(vm);
        var action = ActionFor(record, stopped.ShutdownReason ?? ShutdownReason.Poweroff);
        LogGuestStopped(stopped.Uuid, stopped.DomId, stopped.ShutdownReason, action);
        switch (action)
        {
            case GuestAction.Restart:
                var config = DomainConfigs.Of(_database.Snapshot, record);
                try
                {
                    await Orchestrator.RebootAsync(config, clean: false, TimeSpan.Zero, progress: null, cancellationToken);
                }
                catch (XenopsException e)
                {
                    // The domain is gone either way; the VM ends Halted rather than in a state nothing runs.
                    LogRestartFailed(e, stopped.Uuid);
                }
                await SyncAsync(vm, stopped.Uuid, VmPowerState.Halted, cancellationToken);
                break;
            case GuestAction.Preserve:
                _database.Write(tx =>
                {
                    tx.Update(vm, v =>
                    {
                        v.PowerState = VmPowerState.Paused;
                        v.Domid = stopped.DomId;
                        v.ResidentOn = ThisHost;
                    });
                    VMApi.RefreshAllowedOperations(tx, vm);
                });
                break;
            default:
                await Hypervisor.DestroyAsync(stopped.Uuid, cancellationToken);
                await SyncAsync(vm, stopped.Uuid, VmPowerState.Halted, cancellationToken);
                break;
        }
    }

    private GuestAction ActionFor(VMRecord vm, ShutdownReason reason)
    {
        switch (reason)
        {
            case ShutdownReason.Reboot:
                return vm.ActionsAfterReboot == OnNormalExit.Restart ? GuestAction.Restart : GuestAction.Destroy;
            case ShutdownReason.Crash:
                var action = vm.ActionsAfterCrash switch
                {
                    OnCrashBehaviour.Restart or OnCrashBehaviour.CoredumpAndRestart or OnCrashBehaviour.RenameRestart => GuestAction.Restart,
                    OnCrashBehaviour.Preserve => GuestAction.Preserve,
                    _ => GuestAction.Destroy,
                };
                // A crash loop ends Halted: a guest that crashes soon after starting is not started again.
                var started = _database.Snapshot.Exists(vm.Metrics) ? _database.Snapshot.Get(vm.Metrics).StartTime : DateTime.MinValue;
                return action == GuestAction.Restart && _time.GetUtcNow().UtcDateTime - started < MinimumRunBeforeCrashRestart ? GuestAction.Destroy : action;
            default:
                // A guest that suspended itself unasked cannot be resumed: it is shut down.
                return reason == ShutdownReason.Suspend || vm.ActionsAfterShutdown == OnNormalExit.Destroy ? GuestAction.Destroy : GuestAction.Restart;
        }
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        // The host stops it before the services go, and the container disposes it again.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stopping.CancelAsync();
        await Watcher.DisposeAsync();
        Task[] pending;
        lock (_background)
        {
            pending = [.. _background];
        }
        await Task.WhenAll(pending).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        (Hypervisor as IDisposable)?.Dispose();
        _stopping.Dispose();
    }

    private enum GuestAction
    {
        Destroy,
        Restart,
        Preserve,
    }

    /// <summary>An operation's hold on a VM; disposing releases it.</summary>
    public sealed class Hold(VmRuntime owner, Guid uuid, SemaphoreSlim gate, HoldState state) : IAsyncDisposable
    {
        private int _released;

        /// <summary>Cancelled when the caller's call is, when the daemon stops, or when a hard operation takes over.</summary>
        public CancellationToken Token => state.Cancellation.Token;

        /// <summary>
        /// A hard operation took the VM over: the holder answers TASK_CANCELLED. A caller that
        /// cancelled its own task sees the task cancelled instead.
        /// </summary>
        public bool Preempted => state.Preempted;

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                owner.Release(uuid, state);
                state.Cancellation.Dispose();
                gate.Release();
            }
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>What the runtime knows of a hold: how to cancel it, and whether a hard operation did.</summary>
    public sealed class HoldState(CancellationTokenSource cancellation)
    {
        private volatile bool _preempted;

        public CancellationTokenSource Cancellation { get; } = cancellation;

        public bool Preempted
        {
            get => _preempted;
            set => _preempted = value;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The backend has a domain for VM {Uuid} (domid {DomId}, {Name}) that the pool database does not know; it is left as it is")]
    private partial void LogUnknownDomain(Guid uuid, int domId, string name);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Uuid} ({Name}) was running here but the backend has no domain for it; it is now Halted")]
    private partial void LogDomainVanished(string uuid, string name);

    [LoggerMessage(Level = LogLevel.Information, Message = "The guest of VM {Uuid} (domid {DomId}) stopped ({Reason}); applying {Action}")]
    private partial void LogGuestStopped(Guid uuid, int domId, ShutdownReason? reason, GuestAction action);

    [LoggerMessage(Level = LogLevel.Error, Message = "Restarting VM {Uuid} after its guest stopped failed; it is Halted")]
    private partial void LogRestartFailed(Exception exception, Guid uuid);

    [LoggerMessage(Level = LogLevel.Error, Message = "Reacting to the guest of VM {Uuid} stopping ({Reason}) failed")]
    private partial void LogReactionFailed(Exception exception, Guid uuid, ShutdownReason? reason);
}
