using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// VMs in any power state, written straight into the database: no VM can start yet, and the
/// rules only read the records. Each VM gets a VM_metrics row with the domain type it runs as.
/// </summary>
public sealed class OperationKit(TestDaemon daemon)
{
    private int _count;

    public async Task<string> VmAsync(VmPowerState state, DomainType runningAs = DomainType.Pv, Action<VMValues>? edit = null,
        Action<VMGuestMetricsValues>? guest = null)
    {
        var n = Interlocked.Increment(ref _count);
        var vm = daemon.Database.Write(tx =>
        {
            var metrics = tx.CreateVMMetrics(m =>
            {
                m.Uuid = Guid.NewGuid().ToString("D");
                m.CurrentDomainType = state == VmPowerState.Halted ? DomainType.Unspecified : runningAs;
            });
            var guestMetrics = guest is null ? VMGuestMetricsRef.Null : tx.CreateVMGuestMetrics(g =>
            {
                g.Uuid = Guid.NewGuid().ToString("D");
                guest(g);
            });
            return tx.CreateVM(v =>
            {
                v.Uuid = Guid.NewGuid().ToString("D");
                v.NameLabel = $"vm {n}";
                v.PowerState = state;
                v.Domid = state == VmPowerState.Halted ? -1 : 100 + n;
                v.DomainType = runningAs;
                v.Metrics = metrics;
                v.GuestMetrics = guestMetrics;
                edit?.Invoke(v);
            });
        });
        await daemon.SettledAsync();
        return vm.Value;
    }

    public async Task EditAsync(string vm, Action<VMValues> edit)
    {
        daemon.Database.Write(tx => tx.Update(new VMRef(vm), edit));
        await daemon.SettledAsync();
    }

    public async Task<string> VbdAsync(string vm, Action<VBDValues>? edit = null, bool withDisk = true, Action<VDIValues>? disk = null)
    {
        var vbd = daemon.Database.Write(tx =>
        {
            var vdi = VDIRef.Null;
            if (withDisk)
            {
                var sr = tx.All<SRRecord>().First().Ref;
                vdi = tx.CreateVDI(d =>
                {
                    d.Uuid = Guid.NewGuid().ToString("D");
                    d.SR = sr;
                    d.Managed = true;
                    d.Type = VdiType.User;
                    disk?.Invoke(d);
                });
            }
            return tx.CreateVBD(b =>
            {
                b.Uuid = Guid.NewGuid().ToString("D");
                b.VM = new VMRef(vm);
                b.VDI = vdi;
                b.Empty = !withDisk;
                b.Type = withDisk ? VbdType.Disk : VbdType.CD;
                b.Mode = withDisk ? VbdMode.RW : VbdMode.RO;
                b.Unpluggable = true;
                b.Userdevice = "0";
                edit?.Invoke(b);
            });
        });
        await daemon.SettledAsync();
        return vbd.Value;
    }

    public async Task<string> VifAsync(string vm, Action<VIFValues>? edit = null)
    {
        var vif = daemon.Database.Write(tx =>
        {
            var network = tx.All<NetworkRecord>().First().Ref;
            return tx.CreateVIF(v =>
            {
                v.Uuid = Guid.NewGuid().ToString("D");
                v.VM = new VMRef(vm);
                v.Network = network;
                v.Device = "0";
                v.MAC = "02:00:00:00:00:01";
                edit?.Invoke(v);
            });
        });
        await daemon.SettledAsync();
        return vif.Value;
    }

    /// <summary>The VM's stored allowed_operations after VM.update_allowed_operations, as a client reads them.</summary>
    public static async Task<IReadOnlyList<object?>> AllowedAsync(XenApiClient client, string cls, string reference, string? vm = null)
    {
        await client.InvokeAsync("VM.update_allowed_operations", vm ?? reference);
        return (IReadOnlyList<object?>)(await client.InvokeAsync($"{cls}.get_allowed_operations", reference))!;
    }
}
