using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Ejecting a member, in the real server's order: called at the master, checked there, run on
/// the ejected host (which becomes the master of a new pool of its own), and then the pool forgets
/// the host and what only it held.
/// </summary>
public sealed partial class PoolApi
{
    // Real hosts raise an OCaml exception with no API error for it: clients see INTERNAL_ERROR with its name.
    private const string CannotEjectMaster = "Cannot_eject_master";
    private const string VmResidentOnHost = "VM resident on host";

    public async ValueTask Eject(CallContext context, HostRef host)
    {
        if (context.FromPool)
        {
            await membership.LeavePoolAsync(StartAfresh).ConfigureAwait(false);
            return;
        }
        var snapshot = context.Snapshot;
        var record = snapshot.Get(host);
        if (host.Value == firstBoot.HostRef)
        {
            throw XenApiErrors.InternalError(CannotEjectMaster);
        }
        if (snapshot.All<VMRecord>().Any(v => v.ResidentOn == host && !v.IsControlDomain && v.PowerState != VmPowerState.Halted))
        {
            throw XenApiErrors.OperationNotAllowed(VmResidentOnHost);
        }
        if (snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics) && !metrics.Live)
        {
            throw XenApiErrors.HostOffline(host.Value);
        }
        await Forwarder.ForwardAsync(snapshot, host, context.Message, [context.RequiredSession.Value, host.Value], context.Cancellation).ConfigureAwait(false);
        var forgotten = context.Write(tx => Forget(tx, host));
        logger.LogInformation("Ejected host {Host} from the pool; forgot {Rows} objects only it held", record.NameLabel, forgotten);
    }

    /// <summary>
    /// The pool's side of an eject: the host, what hangs off it (metrics, CPUs, PIFs, PBDs, its
    /// control domain), its local SRs with their VDIs, and the disks of VMs that were on them.
    /// The VMs themselves stay, halted, as on real pools.
    /// </summary>
    private static int Forget(Transaction tx, HostRef host)
    {
        var gone = new HashSet<string>(StringComparer.Ordinal);
        void Delete(ClassMeta cls, string reference)
        {
            if (gone.Add(reference) && tx.TryGet(cls, reference, out _))
            {
                tx.Delete(cls, reference);
            }
        }
        var pbds = tx.All<PBDRecord>().Where(p => p.Host == host).ToList();
        var localSrs = pbds.Select(p => p.SR).Distinct()
            .Where(sr => tx.All<PBDRecord>().All(p => p.SR != sr || p.Host == host)).ToHashSet();
        var vdis = tx.All<VDIRecord>().Where(v => localSrs.Contains(v.SR)).Select(v => v.Ref).ToHashSet();
        foreach (var vbd in tx.All<VBDRecord>().Where(b => vdis.Contains(b.VDI)).ToList())
        {
            if (vbd.Type == VbdType.CD)
            {
                tx.Update(vbd.Ref, b =>
                {
                    b.VDI = VDIRef.Null;
                    b.Empty = true;
                });
            }
            else
            {
                Delete(VBDRef.Class, vbd.Ref.Value);
            }
        }
        foreach (var vdi in vdis)
        {
            Delete(VDIRef.Class, vdi.Value);
        }
        foreach (var pbd in pbds)
        {
            Delete(PBDRef.Class, pbd.Ref.Value);
        }
        foreach (var sr in localSrs)
        {
            Delete(SRRef.Class, sr.Value);
        }
        foreach (var dom0 in tx.All<VMRecord>().Where(v => v.IsControlDomain && v.ResidentOn == host).ToList())
        {
            foreach (var child in dom0.VBDs.Select(r => (VBDRef.Class, r.Value)).Concat(dom0.VIFs.Select(r => (VIFRef.Class, r.Value))).Concat(dom0.Consoles.Select(r => (ConsoleRef.Class, r.Value))).ToList())
            {
                Delete(child.Class, child.Value);
            }
            Delete(VMMetricsRef.Class, dom0.Metrics.Value);
            Delete(VMRef.Class, dom0.Ref.Value);
        }
        foreach (var vm in tx.All<VMRecord>().Where(v => v.Affinity == host).ToList())
        {
            tx.Update(vm.Ref, v => v.Affinity = HostRef.Null);
        }
        var record = tx.Get(host);
        foreach (var pif in tx.All<PIFRecord>().Where(p => p.Host == host).ToList())
        {
            Delete(PIFMetricsRef.Class, pif.Metrics.Value);
            Delete(PIFRef.Class, pif.Ref.Value);
        }
        foreach (var cpu in tx.All<HostCpuRecord>().Where(c => c.Host == host).ToList())
        {
            Delete(HostCpuRef.Class, cpu.Ref.Value);
        }
        Delete(HostMetricsRef.Class, record.Metrics.Value);
        Delete(HostRef.Class, host.Value);
        return gone.Count;
    }
}
