using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// The power operations (xapi_vm.ml, xapi_xenops.ml): each holds the VM, drives the seam through
/// the orchestrator, and ends by folding the backend's state into the database, success or not.
/// Which power states each may start from the operation stage has checked already.
/// </summary>
public sealed partial class VMApi
{
    // What the shutdown alerts say happened (message_forwarding.ml).
    private const string ShutdownDone = "shutdown";
    private const string ShutdownForced = "shutdown forcibly";

    [RunsOn(HostSelection.ChosenHost)]
    [RunsAs<VmOperations>(VmOperations.Start)]
    public async ValueTask Start(CallContext context, VMRef vm, bool startPaused, bool force)
    {
        // VM.start picks a host and hides why the others would not do (choose_host_for_vm): short
        // memory alone still lets the backend try, squeezing the running guests.
        if (await BootRefusalAsync(context, vm, runtime.ThisHost) is { } refused && refused.Code != ErrorCodes.HostNotEnoughFreeMemory)
        {
            throw XenApiErrors.NoHostsAvailable();
        }
        await StartHereAsync(context, vm, startPaused);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Started, "started " + VmAlerts.OnHost(context, runtime.ThisHost));
        await DelayAsync(context, context.Snapshot.Get(vm).StartDelay);
    }

    [RunsOn(HostSelection.NamedHost)]
    [RunsAs<VmOperations>(VmOperations.StartOn)]
    public async ValueTask StartOn(CallContext context, VMRef vm, HostRef host, bool startPaused, bool force)
    {
        await AssertCanBootHereAsync(context, vm, host);
        await StartHereAsync(context, vm, startPaused);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Started, "started " + VmAlerts.OnHost(context, runtime.ThisHost));
        await DelayAsync(context, context.Snapshot.Get(vm).StartDelay);
    }

    public async ValueTask AssertCanBootHere(CallContext context, VMRef self, HostRef host) => await AssertCanBootHereAsync(context, self, host);

    private async ValueTask AssertCanBootHereAsync(CallContext context, VMRef vm, HostRef host)
    {
        if (await BootRefusalAsync(context, vm, host) is { } refused)
        {
            throw refused;
        }
    }

    private async ValueTask<XenApiException?> BootRefusalAsync(CallContext context, VMRef vm, HostRef host)
    {
        var snapshot = context.Snapshot;
        // This host's memory as its hypervisor counts it; another member's as it last recorded it.
        var memory = host == runtime.ThisHost
            ? await runtime.Hypervisor.GetHostMemoryAsync(context.Cancellation)
            : RecordedMemory(snapshot, host);
        return BootChecks.Check(snapshot, snapshot.Get(vm), snapshot.Get(host), memory);
    }

    private static HostMemoryInfo RecordedMemory(Xapi.Database.DbSnapshot snapshot, HostRef host)
    {
        var record = snapshot.Get(host);
        return snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics)
            ? new HostMemoryInfo(metrics.MemoryTotal, record.MemoryOverhead, metrics.MemoryFree)
            : new HostMemoryInfo(0, record.MemoryOverhead, 0);
    }

    /// <summary>
    /// The host the master starts (or resumes) a VM on, as real hosts choose (choose_host_for_vm):
    /// among the hosts it can boot on (live, enabled, reaching its SRs and networks, with the memory
    /// and CPUs), its affinity if that is one of them, else the one with the most free memory.
    /// Null when none can: the start here then says why.
    /// </summary>
    internal HostRef? ChooseHost(CallContext context, VMRef vm)
    {
        var snapshot = context.Snapshot;
        if (!snapshot.TryGet(vm, out VMRecord record) || record.PowerState is not (VmPowerState.Halted or VmPowerState.Suspended))
        {
            return null;
        }
        var candidates = snapshot.All<HostRecord>()
            .Select(h => (Host: h, Memory: RecordedMemory(snapshot, h.Ref)))
            .Where(c => BootChecks.Check(snapshot, record, c.Host, c.Memory) is null)
            .ToList();
        if (candidates.Any(c => c.Host.Ref == record.Affinity))
        {
            return record.Affinity;
        }
        return candidates.Count == 0 ? null
            : candidates.MaxBy(c => BootChecks.FreeBytes(snapshot, c.Host.Ref, c.Memory)).Host.Ref;
    }

    private async ValueTask StartHereAsync(CallContext context, VMRef vm, bool paused)
    {
        var record = context.Snapshot.Get(vm);
        await runtime.RunAsync(context, vm, Guid.Parse(record.Uuid), async token =>
            await runtime.Orchestrator.StartAsync(DomainConfigs.Of(context.Snapshot, record), paused, context.ReportProgress, token));
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.CleanShutdown)]
    public async ValueTask CleanShutdown(CallContext context, VMRef vm)
    {
        await StopAsync(context, vm, clean: true, runtime.GuestShutdownTimeout);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Shutdown, ShutdownDone);
        await DelayAsync(context, context.Snapshot.Get(vm).ShutdownDelay);
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.HardShutdown)]
    public async ValueTask HardShutdown(CallContext context, VMRef vm)
    {
        var wasLive = context.Snapshot.Get(vm).PowerState is VmPowerState.Running or VmPowerState.Paused;
        await HardStopAsync(context, vm);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Shutdown, ShutdownForced);
        if (wasLive)
        {
            await DelayAsync(context, context.Snapshot.Get(vm).ShutdownDelay);
        }
    }

    /// <summary>
    /// start_delay and shutdown_delay: the operation stays registered that long after the domain
    /// started or stopped, so appliances and clients starting VMs in order space them out (xapi_vm_helpers.ml).
    /// </summary>
    private static async ValueTask DelayAsync(CallContext context, long seconds)
    {
        if (seconds > 0)
        {
            await Task.Delay(TimeSpan.FromSeconds(seconds), context.Cancellation);
        }
    }

    /// <summary>A clean shutdown that falls back to a hard one if the guest does not cooperate; a suspended VM loses its image.</summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.Shutdown)]
    public async ValueTask Shutdown(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        if (record.PowerState != VmPowerState.Suspended)
        {
            var timeout = record.ShutdownDelay > 0 ? TimeSpan.FromSeconds(record.ShutdownDelay) : runtime.GuestShutdownTimeout;
            try
            {
                await StopAsync(context, vm, clean: true, timeout);
                await _alerts.RaiseAsync(context, vm, VmAlerts.Shutdown, ShutdownDone);
                return;
            }
            catch (XenApiException e) when (e.Code is not ErrorCodes.TaskCancelled)
            {
                // Whatever stopped the clean way, the hard way follows (xapi_vm.ml shutdown).
            }
        }
        await HardStopAsync(context, vm);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Shutdown, ShutdownDone);
    }

    private async ValueTask StopAsync(CallContext context, VMRef vm, bool clean, TimeSpan timeout)
    {
        var uuid = Guid.Parse(context.Snapshot.Get(vm).Uuid);
        await runtime.RunAsync(context, vm, uuid, async token =>
        {
            try
            {
                await runtime.Orchestrator.ShutdownAsync(uuid, clean, timeout, token);
            }
            catch (DomainNotFoundException)
            {
                // Already gone: the VM is halted, which is what was asked.
            }
        }, preempt: !clean);
    }

    private async ValueTask HardStopAsync(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        if (record.PowerState == VmPowerState.Suspended)
        {
            await DiscardSuspendImageAsync(context, vm);
            return;
        }
        await StopAsync(context, vm, clean: false, TimeSpan.Zero);
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.CleanReboot)]
    public async ValueTask CleanReboot(CallContext context, VMRef vm)
    {
        await RebootAsync(context, vm, clean: true);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Rebooted, "rebooted cleanly");
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.HardReboot)]
    public async ValueTask HardReboot(CallContext context, VMRef vm)
    {
        await RebootAsync(context, vm, clean: false);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Rebooted, "rebooted forcibly");
    }

    private async ValueTask RebootAsync(CallContext context, VMRef vm, bool clean)
    {
        var record = context.Snapshot.Get(vm);
        // The memory settings cannot change across a reboot: the new domain gets the old config.
        await runtime.RunAsync(context, vm, Guid.Parse(record.Uuid), async token =>
            await runtime.Orchestrator.RebootAsync(DomainConfigs.Of(context.Snapshot, record), clean, runtime.GuestShutdownTimeout, context.ReportProgress, token),
            preempt: !clean);
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.Pause)]
    public async ValueTask Pause(CallContext context, VMRef vm)
    {
        await OnDomainAsync(context, vm, (uuid, token) => runtime.Hypervisor.PauseAsync(uuid, token));
        await _alerts.RaiseAsync(context, vm, VmAlerts.Paused, "paused");
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.Unpause)]
    public async ValueTask Unpause(CallContext context, VMRef vm)
    {
        await OnDomainAsync(context, vm, (uuid, token) => runtime.Hypervisor.UnpauseAsync(uuid, token));
        await _alerts.RaiseAsync(context, vm, VmAlerts.Unpaused, "unpaused");
    }

    private async ValueTask OnDomainAsync(CallContext context, VMRef vm, Func<Guid, CancellationToken, ValueTask<DomainState>> operation)
    {
        var uuid = Guid.Parse(context.Snapshot.Get(vm).Uuid);
        await runtime.RunAsync(context, vm, uuid, async token => await operation(uuid, token));
    }

    /// <summary>
    /// Marks a VM Halted whatever the database said, for a VM whose host died (xapi_vm.ml
    /// power_state_reset). Refused while its domain still runs here: that would lose track of it.
    /// </summary>
    public async ValueTask PowerStateReset(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        if (record.IsControlDomain)
        {
            throw XenApiErrors.CannotResetControlDomain(vm.Value);
        }
        var uuid = Guid.Parse(record.Uuid);
        if (record.PowerState is VmPowerState.Running or VmPowerState.Paused && record.ResidentOn == runtime.ThisHost)
        {
            await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
            var domain = await runtime.Hypervisor.TryGetDomainAsync(uuid, hold.Token);
            if (domain is { PowerState: DomainPowerState.Running })
            {
                // Declared with [vm; domid]; real hosts send only the VM.
                throw new XenApiException(ErrorCodes.DomainExists, vm.Value);
            }
            if (domain is not null)
            {
                await runtime.Hypervisor.DestroyAsync(uuid, hold.Token);
            }
        }
        context.Write(tx =>
        {
            ForceHalted(tx, vm);
        });
        await context.SettledAsync();
    }

    /// <summary>force_state_reset Halted: no domain, no residence, devices detached, no operations left registered.</summary>
    private void ForceHalted(Xapi.Database.Transaction tx, VMRef vm) => ForceStateReset(tx, vm, VmPowerState.Halted);

    /// <summary>A suspended VM shut down hard: its image is destroyed (errors ignored, as real hosts do) and it is Halted.</summary>
    private async ValueTask DiscardSuspendImageAsync(CallContext context, VMRef vm)
    {
        var image = context.Snapshot.Get(vm).SuspendVDI;
        if (!image.IsNull && context.Snapshot.Exists(image))
        {
            try
            {
                await storage.DiscardVdiAsync(image);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The VM is halted whether or not its image could go.
            }
        }
        context.Write(tx =>
        {
            tx.Update(vm, v => v.SuspendVDI = VDIRef.Null);
            ForceHalted(tx, vm);
        });
        await context.SettledAsync();
    }
}
