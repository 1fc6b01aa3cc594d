using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>
/// <c>VBD.allowed_operations</c> and the check of each VBD operation, as real hosts decide them
/// (xapi_vbd_helpers.ml <c>valid_operations</c>): each operation keeps the first error assigned
/// to it, in a fixed order: operations in progress, unpluggable, removable media, empty, the
/// VM's power state, the VM's own operation, HVM hotplug, a suspended CD, then the VDI.
/// </summary>
public sealed class VbdAllowedOperations : IOperationRule
{
    // The order real hosts build their table in; the stored list keeps it.
    private static readonly VbdOperations[] All =
    [
        VbdOperations.Attach, VbdOperations.Eject, VbdOperations.Unplug, VbdOperations.UnplugForce, VbdOperations.Insert,
        VbdOperations.Plug, VbdOperations.Pause, VbdOperations.Unpause,
    ];

    private static readonly VmOperations[] VmOperationsStoppingHotplug =
        [VmOperations.CleanShutdown, VmOperations.HardShutdown, VmOperations.Suspend, VmOperations.Pause];

    public ClassMeta Class => VBDRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        Compute(VBDRecord.Wrap(db, reference, values)).Select(o => (object?)o.ToWire()).ToArray();

    public XenApiException? Check(IRowReader db, string reference, IReadOnlyList<object?> values, string operation) =>
        Check(VBDRecord.Wrap(db, reference, values), VbdOperationsWire.Parse(operation));

    /// <summary>The error that refuses <paramref name="op"/>, or null; with the VDI sharing checks, as an operation about to run gets.</summary>
    public static XenApiException? Check(VBDRecord vbd, VbdOperations op) => Table(vbd, sharingChecks: true)[op];

    /// <summary>
    /// The operations <c>allowed_operations</c> lists. Real hosts leave the VDI sharing checks
    /// out of this list (they cost a scan of every VBD of the VDI); the operation itself still
    /// runs them.
    /// </summary>
    public static IReadOnlyList<VbdOperations> Compute(VBDRecord vbd)
    {
        var table = Table(vbd, sharingChecks: false);
        return All.Where(op => table[op] is null).ToArray();
    }

    public static void Refresh(Transaction tx, VBDRef vbd)
    {
        if (!tx.TryGet(vbd, out var record))
        {
            return;
        }
        var allowed = Compute(record);
        if (!allowed.SequenceEqual(record.AllowedOperations))
        {
            tx.Update(vbd, v => v.AllowedOperations = allowed.ToArray());
        }
    }

    private static Dictionary<VbdOperations, XenApiException?> Table(VBDRecord vbd, bool sharingChecks)
    {
        var db = vbd.Source;
        var self = vbd.Ref.Value;
        var table = All.ToDictionary(op => op, _ => (XenApiException?)null);
        void Refuse(XenApiException error, params VbdOperations[] ops)
        {
            foreach (var op in ops)
            {
                table[op] ??= error;
            }
        }

        // Real hosts report one operation in progress, the first after sorting them by operation.
        var current = vbd.CurrentOperations.Select(p => ((string)p.Key, VbdOperationsWire.Parse((string)p.Value!)))
            .OrderBy(c => c.Item2).ToList();
        XenApiException InProgress((string Task, VbdOperations Op) c) =>
            XenApiErrors.OtherOperationInProgress(VBDRef.Class.Name, self, c.Op.ToWire(), c.Task);
        if (current.Count > 0)
        {
            Refuse(InProgress(current[0]), All.Except([VbdOperations.Pause, VbdOperations.Unpause]).ToArray());
        }
        if (current.FirstOrDefault(c => c.Item2 is not (VbdOperations.Pause or VbdOperations.Unpause)) is { Item1: not null } notParallel)
        {
            Refuse(InProgress(notParallel), VbdOperations.Pause);
        }
        if (current.FirstOrDefault(c => c.Item2 is not (VbdOperations.Attach or VbdOperations.Pause or VbdOperations.Unpause)) is { Item1: not null } blocksUnpause)
        {
            Refuse(InProgress(blocksUnpause), VbdOperations.Unpause);
        }
        if (!vbd.Unpluggable)
        {
            Refuse(XenApiErrors.VbdNotUnpluggable(self), VbdOperations.Unplug, VbdOperations.UnplugForce);
        }
        if (vbd.Type != VbdType.CD)
        {
            Refuse(XenApiErrors.VbdNotRemovableMedia(self), VbdOperations.Insert, VbdOperations.Eject);
        }
        if (vbd.Empty)
        {
            Refuse(XenApiErrors.VbdIsEmpty(self), VbdOperations.Eject);
        }
        else
        {
            Refuse(XenApiErrors.VbdNotEmpty(self), VbdOperations.Insert);
        }

        var vm = db.Get(vbd.VM);
        var power = vm.PowerState;
        switch (power, vbd.CurrentlyAttached)
        {
            case (VmPowerState.Running, true):
                Refuse(XenApiErrors.DeviceAlreadyAttached(self), VbdOperations.Plug);
                break;
            case (VmPowerState.Running, false):
                Refuse(XenApiErrors.DeviceAlreadyDetached(self), VbdOperations.Unplug, VbdOperations.UnplugForce);
                break;
            default:
                var error = XenApiErrors.VmBadPowerState(vm.Ref.Value, VmAllowedOperations.Spelled(VmPowerState.Running), VmAllowedOperations.Spelled(power));
                Refuse(error, VbdOperations.Plug, VbdOperations.Unplug, VbdOperations.UnplugForce);
                if (power != VmPowerState.Paused)
                {
                    Refuse(error, VbdOperations.Pause, VbdOperations.Unpause);
                }
                break;
        }
        foreach (var vmOp in VmOperationsOf(vm).Where(VmOperationsStoppingHotplug.Contains))
        {
            Refuse(XenApiErrors.OperationNotAllowed($"Current operation on VM:{vm.Ref.Value} is {VmAllowedOperations.Named(vmOp)}"), VbdOperations.Plug, VbdOperations.Unplug);
        }
        if (power == VmPowerState.Running && IsHvm(vm))
        {
            var hotplug = new[] { VbdOperations.Plug, VbdOperations.Unplug, VbdOperations.UnplugForce };
            if (HotplugRefusal(vm, vm.Source.TryGet(vm.GuestMetrics, out var guest) ? guest : null, g => g.CanUseHotplugVbd, "VM states it does not support VBD hotplug.") is { } refusal)
            {
                Refuse(refusal, hotplug);
            }
            if (vbd.Type == VbdType.CD)
            {
                Refuse(XenApiErrors.OperationNotAllowed("HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected"), hotplug);
            }
        }
        if (vbd.Type == VbdType.CD && power == VmPowerState.Suspended)
        {
            Refuse(XenApiErrors.VmBadPowerState(vm.Ref.Value, $"{VmAllowedOperations.Spelled(VmPowerState.Halted)}, {VmAllowedOperations.Spelled(VmPowerState.Running)}",
                VmAllowedOperations.Spelled(VmPowerState.Suspended)), VbdOperations.Insert, VbdOperations.Eject);
        }
        if (!vbd.Empty && db.TryGet(vbd.VDI, out var vdi))
        {
            if (!vdi.Managed)
            {
                // Real hosts name the VBD here, where errors.json declares the VDI.
                Refuse(XenApiErrors.VdiNotManaged(self), All);
            }
            var copy = VdiOperations.Copy.ToWire();
            var mirror = VdiOperations.Mirror.ToWire();
            foreach (var (task, op) in vdi.CurrentOperations)
            {
                if ((string)op! != copy && (string)op! != mirror)
                {
                    Refuse(XenApiErrors.OtherOperationInProgress(VDIRef.Class.Name, vdi.Ref.Value, (string)op!, (string)task),
                        VbdOperations.Attach, VbdOperations.Plug, VbdOperations.Insert);
                    break;
                }
            }
            if (!vbd.CurrentlyAttached && sharingChecks)
            {
                RefuseSharing(vbd, vm, vdi, Refuse);
            }
        }
        return table;
    }

    private static void RefuseSharing(VBDRecord vbd, VMRecord vm, VDIRecord vdi, Action<XenApiException, VbdOperations[]> refuse)
    {
        var db = vbd.Source;
        var others = vdi.VBDs.Where(b => b != vbd.Ref).Select(b => db.TryGet(b, out var other) ? other : (VBDRecord?)null).OfType<VBDRecord>()
            .Where(b => db.TryGet(b.VM, out var owner) && owner.PowerState != VmPowerState.Suspended && !owner.IsControlDomain)
            .Where(b => b.CurrentlyAttached || b.CurrentOperations.Count > 0)
            .ToList();
        var needWrite = vbd.Mode == VbdMode.RW;
        if (!vdi.Sharable && !vm.IsControlDomain && (others.Any(b => b.Mode == VbdMode.RW) || (needWrite && others.Count > 0)))
        {
            // Real hosts send only the VDI here; errors.json declares an operation too.
            refuse(new XenApiException(ErrorCodes.VdiInUse, vdi.Ref.Value), [VbdOperations.Attach, VbdOperations.Insert, VbdOperations.Plug]);
        }
        if (needWrite && vdi.ReadOnly)
        {
            refuse(XenApiErrors.VdiReadonly(vdi.Ref.Value), [VbdOperations.Attach, VbdOperations.Insert, VbdOperations.Plug]);
        }
    }

    internal static IEnumerable<VmOperations> VmOperationsOf(VMRecord vm) =>
        vm.CurrentOperations.Values.Select(op => VmOperationsWire.Parse((string)op!));

    /// <summary>
    /// The domain type that decides hotplug: the running domain's (VM_metrics), else the
    /// configured one; real hosts fail on an unspecified type, a VM here falls back to its
    /// HVM boot policy.
    /// </summary>
    internal static bool IsHvm(VMRecord vm)
    {
        var type = vm.Source.TryGet(vm.Metrics, out var metrics) && metrics.CurrentDomainType != DomainType.Unspecified
            ? metrics.CurrentDomainType
            : vm.DomainType;
        return type == DomainType.Hvm || (type == DomainType.Unspecified && vm.HVMBootPolicy.Length > 0);
    }

    /// <summary>Whether a running HVM guest can hotplug a device: it says so, or has PV drivers (xapi_vbd_helpers.ml, xapi_vif_helpers.ml).</summary>
    internal static XenApiException? HotplugRefusal(VMRecord vm, VMGuestMetricsRecord? guest, Func<VMGuestMetricsRecord, TristateType> claim, string refusal)
    {
        if (guest is { } g)
        {
            switch (claim(g))
            {
                case TristateType.Yes:
                    return null;
                case TristateType.No:
                    return XenApiErrors.OperationNotAllowed(refusal);
                case TristateType.Unspecified when g.PVDriversDetected:
                    return null;
            }
        }
        return VmAllowedOperations.HasPvDrivers(guest) ? null : XenApiErrors.VmMissingPvDrivers(vm.Ref.Value);
    }
}
