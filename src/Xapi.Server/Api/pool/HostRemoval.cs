using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>The pool's side of a host leaving it: <c>pool.eject</c> and <c>host.destroy</c>.</summary>
internal static class HostRemoval
{
    /// <summary>
    /// What a pool forgets of a host that left it (ejected, or destroyed when dead): the host, what hangs off it (metrics, CPUs, PIFs, PBDs, its
    /// control domain), its local SRs with their VDIs, and the disks of VMs that were on them.
    /// The VMs themselves stay, halted, as on real pools.
    /// </summary>
    public static int Forget(Transaction tx, HostRef host)
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
