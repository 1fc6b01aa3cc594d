using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Virtual block devices. <c>VBD.create</c> runs the real server's checks in its order
/// (xapi_vbd.ml): the disk's type, CD rules, read-only disks, a migrating VM, then the device
/// name (resolving "autodetect") and its uniqueness among the VM's devices, all inside the
/// writing transaction so that two creates cannot take the same device.
/// </summary>
public sealed partial class VBDApi(VMApi vms, VmRuntime runtime) : IVBDApi<CallContext>, IObjectLifecycle
{
    internal const string Autodetect = "autodetect";

    // other_config key an SR's driver may set on a VDI to choose the VBD backend (xapi_globs.ml).
    private const string BackendKindKey = "backend-kind";

    // VDI types a VBD may attach (xapi_vbd.ml); the others are the host's own.
    private static readonly VdiType[] AttachableTypes =
        [VdiType.System, VdiType.User, VdiType.Ephemeral, VdiType.Suspend, VdiType.Crashdump, VdiType.Metadata, VdiType.Rrd, VdiType.PvsCache];

    private static readonly VmOperations[] MigrateOperations = [VmOperations.MigrateSend, VmOperations.PoolMigrate];

    ClassMeta IObjectLifecycle.Class => VBDRef.Class;

    ValueTask<string> IObjectLifecycle.CreateAsync(CallContext context, object?[] values) =>
        ValueTask.FromResult(context.Write(tx => Create(tx, values)));

    private string Create(Transaction tx, object?[] values)
    {
        var vbd = new VBDValues(values);
        var vm = tx.Get(vbd.VM);
        // Only a suspended VM's devices are live in a record; others are created detached.
        if (vm.PowerState != VmPowerState.Suspended)
        {
            vbd.Device = "";
            vbd.CurrentlyAttached = false;
        }
        VDIRecord? vdi = null;
        if (!vbd.Empty)
        {
            var disk = tx.Get(vbd.VDI);
            vdi = disk;
            if (!AttachableTypes.Contains(disk.Type))
            {
                throw XenApiErrors.VdiIncompatibleType(disk.Ref.Value, TypeDisplayName(disk.Type));
            }
        }
        if (vbd.Type == VbdType.CD && vbd.Mode != VbdMode.RO)
        {
            throw XenApiErrors.VbdCdsMustBeReadonly();
        }
        if (vbd.Type != VbdType.CD && vbd.Empty)
        {
            throw XenApiErrors.VbdNotRemovableMedia("in constructor");
        }
        if (vbd.Mode == VbdMode.RW && vdi is { ReadOnly: true } readOnly)
        {
            throw XenApiErrors.VdiReadonly(readOnly.Ref.Value);
        }
        var migrating = vm.CurrentOperations
            .Select(p => (Task: (string)p.Key, Op: VmOperationsWire.Parse((string)p.Value!)))
            .Where(p => MigrateOperations.Contains(p.Op))
            .OrderBy(p => p.Op)
            .FirstOrDefault();
        if (migrating.Task is not null)
        {
            throw XenApiErrors.OtherOperationInProgress(VMRef.Class.Name, vm.Ref.Value, migrating.Op.ToWire(), migrating.Task);
        }
        var free = VbdDevices.Free(tx, vm, vbd.Type)
            ?? throw XenApiErrors.NotImplemented("VBD of type 'floppy' is not supported on PV domain");
        var userdevice = vbd.Userdevice;
        if (!IsValidDevice(userdevice, vbd.Type))
        {
            throw XenApiErrors.InvalidDevice(userdevice);
        }
        if (userdevice == Autodetect)
        {
            if (free.Count == 0)
            {
                throw XenApiErrors.InvalidDevice(userdevice);
            }
            userdevice = vbd.Type == VbdType.Floppy ? free[0].ToLinuxDevice() : free[0].Disk.ToString(CultureInfo.InvariantCulture);
            vbd.Userdevice = userdevice;
        }
        var used = VbdDevices.Used(tx, vm.Ref);
        if (DeviceNumber.Interpretations(userdevice).Any(used.Contains))
        {
            throw XenApiErrors.DeviceAlreadyExists(userdevice);
        }
        vbd.Metrics = tx.CreateVBDMetrics(m => m.Uuid = Guid.NewGuid().ToString("D"));
        if (vdi is { } attached && attached.SmConfig.TryGetValue(BackendKindKey, out var backendKind))
        {
            vbd.OtherConfig = vbd.OtherConfig.With(BackendKindKey, backendKind);
        }
        vbd.Uuid = Guid.NewGuid().ToString("D");
        vbd.AllowedOperations = [];
        vbd.CurrentOperations = ValueMap.Empty;
        vbd.StorageLock = false;
        vbd.StatusCode = 0;
        vbd.StatusDetail = "";
        vbd.RuntimeProperties = ValueMap.Empty;
        vbd.QosSupportedAlgorithms = [];
        var created = tx.CreateRowCheckingReferences(VBDRef.Class, values);
        vms.RefreshAllowedOperations(tx, VBDRef.Class, created);
        return created;
    }

    ValueTask IObjectLifecycle.DestroyAsync(CallContext context, string reference)
    {
        var self = new VBDRef(reference);
        context.Write(tx =>
        {
            var vbd = tx.Get(self);
            if (vbd.CurrentlyAttached)
            {
                throw XenApiErrors.OperationNotAllowed($"VBD '{vbd.Uuid}' still attached to '{tx.Get(vbd.VM).Uuid}'");
            }
            if (tx.Exists(vbd.Metrics))
            {
                tx.Delete(vbd.Metrics);
            }
            tx.Delete(self);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// "autodetect", a name a PV guest can read, or any integer: real hosts mean to limit
    /// numbers to 0–15 but their check (<c>n >= 0 || n &lt; 16</c>) lets every integer through.
    /// </summary>
    private static bool IsValidDevice(string device, VbdType type) =>
        device == Autodetect
        || DeviceNumber.Parse(device, hvm: false) is not null
        || (type != VbdType.Floppy && OcamlInt.TryParse(device, out _));

    // The names real hosts give VDI types in this error (record_util.ml).
    private static string TypeDisplayName(VdiType type) => type switch
    {
        VdiType.HaStatefile => "HA statefile",
        VdiType.RedoLog => "Redo log",
        VdiType.CbtMetadata => "CBT metadata",
        _ => type.ToWire(),
    };
}
