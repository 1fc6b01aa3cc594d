using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>
/// <c>VIF.allowed_operations</c> and the check of each VIF operation, as real hosts decide them
/// (xapi_vif_helpers.ml <c>valid_operations</c>): each operation keeps the first error assigned
/// to it: operations in progress, dom0, SR-IOV, the VM's power state, the VM's own operation,
/// HVM hotplug.
/// </summary>
public sealed class VifAllowedOperations : IOperationRule
{
    private static readonly VifOperations[] All = [VifOperations.Attach, VifOperations.Plug, VifOperations.Unplug];

    private static readonly VmOperations[] VmOperationsStoppingHotplug =
        [VmOperations.CleanShutdown, VmOperations.HardShutdown, VmOperations.Suspend, VmOperations.Pause];

    public ClassMeta Class => VIFRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        Compute(VIFRecord.Wrap(db, reference, values)).Select(o => (object?)o.ToWire()).ToArray();

    public XenApiException? Check(IRowReader db, string reference, IReadOnlyList<object?> values, string operation) =>
        Check(VIFRecord.Wrap(db, reference, values), VifOperationsWire.Parse(operation));

    public static XenApiException? Check(VIFRecord vif, VifOperations op) => Table(vif)[op];

    public static IReadOnlyList<VifOperations> Compute(VIFRecord vif)
    {
        var table = Table(vif);
        return All.Where(op => table[op] is null).ToArray();
    }

    public static void Refresh(Transaction tx, VIFRef vif)
    {
        if (!tx.TryGet(vif, out var record))
        {
            return;
        }
        var allowed = Compute(record);
        if (!allowed.SequenceEqual(record.AllowedOperations))
        {
            tx.Update(vif, v => v.AllowedOperations = allowed.ToArray());
        }
    }

    private static Dictionary<VifOperations, XenApiException?> Table(VIFRecord vif)
    {
        var db = vif.Source;
        var self = vif.Ref.Value;
        var table = All.ToDictionary(op => op, _ => (XenApiException?)null);
        void Refuse(XenApiException error, params VifOperations[] ops)
        {
            foreach (var op in ops)
            {
                table[op] ??= error;
            }
        }

        if (vif.CurrentOperations.Count > 0)
        {
            // Unlike VMs and VBDs, real hosts always use braces here, with "; " between entries,
            // listing the operations in reverse.
            var current = vif.CurrentOperations.Reverse().ToList();
            Refuse(XenApiErrors.OtherOperationInProgress(VIFRef.Class.Name, self,
                $"{{{string.Join("; ", current.Select(c => (string)c.Value!))}}}", $"{{{string.Join("; ", current.Select(c => (string)c.Key))}}}"), All);
        }
        var vm = db.Get(vif.VM);
        if (vm.IsControlDomain && db.TryGet(vm.ResidentOn, out var host) && host.ControlDomain == vm.Ref)
        {
            Refuse(XenApiErrors.OperationNotAllowed("Control domain does not support hotplug"), VifOperations.Plug);
        }
        if (IsSriovNetwork(db, vif.Network))
        {
            Refuse(XenApiErrors.OperationNotAllowed("Network SR-IOV VIF plug/unplug not allowed"), VifOperations.Plug, VifOperations.Unplug);
        }
        var power = vm.PowerState;
        switch (power, vif.CurrentlyAttached)
        {
            case (VmPowerState.Running, true):
                Refuse(XenApiErrors.DeviceAlreadyAttached(self), VifOperations.Plug);
                break;
            case (VmPowerState.Running, false):
                Refuse(XenApiErrors.DeviceAlreadyDetached(self), VifOperations.Unplug);
                break;
            default:
                Refuse(XenApiErrors.VmBadPowerState(vm.Ref.Value, VmAllowedOperations.Spelled(VmPowerState.Running), VmAllowedOperations.Spelled(power)),
                    VifOperations.Plug, VifOperations.Unplug);
                break;
        }
        foreach (var vmOp in VbdAllowedOperations.VmOperationsOf(vm).Where(VmOperationsStoppingHotplug.Contains))
        {
            Refuse(XenApiErrors.OperationNotAllowed($"Current operation on VM:{vm.Ref.Value} is {VmAllowedOperations.Named(vmOp)}"), VifOperations.Plug, VifOperations.Unplug);
        }
        if (power == VmPowerState.Running && VbdAllowedOperations.IsHvm(vm)
            && VbdAllowedOperations.HotplugRefusal(vm, db.TryGet(vm.GuestMetrics, out var guest) ? guest : null, g => g.CanUseHotplugVif,
                "VM states it does not support VIF hotplug.") is { } refusal)
        {
            Refuse(refusal, VifOperations.Plug, VifOperations.Unplug);
        }
        return table;
    }

    // A network is SR-IOV when its first PIF is an SR-IOV logical PIF, or a VLAN on one (xapi_network_sriov_helpers.ml).
    private static bool IsSriovNetwork(IRowReader db, NetworkRef network)
    {
        if (!db.TryGet(network, out var net) || net.PIFs is not [var first, ..] || !db.TryGet(first, out var pif))
        {
            return false;
        }
        if (pif.SriovLogicalPIFOf.Count > 0)
        {
            return true;
        }
        return db.TryGet(pif.VLANMasterOf, out var vlan) && db.TryGet(vlan.TaggedPIF, out var tagged) && tagged.SriovLogicalPIFOf.Count > 0;
    }
}
