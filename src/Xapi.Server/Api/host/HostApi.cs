using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

public sealed class HostApi(TimeProvider time, VmRuntime runtime) : IHostApi<CallContext>
{
    /// <summary>
    /// Removes a dead member from the pool (run at the master), in the real server's order of
    /// checks: a host alive, or the master itself, is HOST_IS_LIVE; one with VMs still resident
    /// (reset them first) is HOST_HAS_RESIDENT_VMS.
    /// </summary>
    public ValueTask Destroy(CallContext context, HostRef self)
    {
        var snapshot = context.Snapshot;
        var host = snapshot.Get(self);
        var live = !snapshot.TryGet(host.Metrics, out HostMetricsRecord metrics) || metrics.Live;
        if (live || self == runtime.ThisHost)
        {
            throw XenApiErrors.HostIsLive(self.Value);
        }
        if (snapshot.All<VMRecord>().Any(v => v.ResidentOn == self && !v.IsControlDomain))
        {
            throw XenApiErrors.HostHasResidentVms(self.Value);
        }
        context.Write(tx => HostRemoval.Forget(tx, self));
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Declares a member dead that the administrator knows is (xapi_host.ml declare_dead), after
    /// the same checks as a destroy: its VMs are reset to Halted, so they can start elsewhere,
    /// and it is disabled. Its record stays, for it to come back or be destroyed.
    /// </summary>
    public ValueTask DeclareDead(CallContext context, HostRef host)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.Get(host);
        if (!snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics) || metrics.Live || host == runtime.ThisHost)
        {
            throw XenApiErrors.HostIsLive(host.Value);
        }
        context.Write(tx =>
        {
            foreach (var vm in tx.All<VMRecord>().Where(v => v.ResidentOn == host && !v.IsControlDomain).Select(v => v.Ref).ToList())
            {
                runtime.ResetState(tx, vm, VmPowerState.Halted, keepCurrentOperations: false);
                VMApi.RefreshAllowedOperations(tx, vm);
            }
            tx.Update(host, h => h.Enabled = false);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// host.compute_free_memory (memory_check.ml): the host's memory less its own overhead and the
    /// dynamic_min plus overhead of every VM resident on or scheduled to it, at most compression;
    /// what the database promises, not what the balloons hold at the moment.
    /// </summary>
    public async ValueTask<long> ComputeFreeMemory(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        var memory = await runtime.Hypervisor.GetHostMemoryAsync(context.Cancellation);
        return BootChecks.FreeBytes(context.Snapshot, host, memory);
    }

    /// <summary>What the host keeps for itself (Xen and dom0), as the backend accounts it.</summary>
    public async ValueTask<long> ComputeMemoryOverhead(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        return (await runtime.Hypervisor.GetHostMemoryAsync(context.Cancellation)).HostOverhead;
    }

    // The real server forwards to the named host, so a host that does not exist is HANDLE_INVALID.
    public ValueTask<DateTime> GetServertime(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        return ValueTask.FromResult(Whole(time.GetUtcNow().UtcDateTime));
    }

    public ValueTask<DateTime> GetServerLocaltime(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        return ValueTask.FromResult(Whole(time.GetLocalNow().DateTime));
    }

    /// <summary>
    /// The method list, as <c>system.listMethods</c> gives it. (Real hosts answer
    /// NOT_IMPLEMENTED here; listing is what a caller of this message wants.)
    /// </summary>
    public ValueTask<IReadOnlyList<string>> ListMethods(CallContext context) => ValueTask.FromResult(Dispatcher.MethodNames);

    private static DateTime Whole(DateTime value) =>
        new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
