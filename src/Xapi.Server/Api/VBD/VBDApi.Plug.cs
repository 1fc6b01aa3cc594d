using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// Disk hotplug and removable media on running VMs (xapi_vbd.ml, xapi_xenops.ml vbd_*): each
/// holds the VM, drives one device operation over the seam, and folds the backend's state into
/// the database through the runtime, so that <c>currently_attached</c>, <c>device</c> and a
/// drive's media are written in one place. The operation stage has already run the VBD's
/// allowed-operations table (power state, hotplug, removable media, operations in progress).
/// </summary>
public sealed partial class VBDApi
{
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VbdOperations>(VbdOperations.Plug)]
    public async ValueTask Plug(CallContext context, VBDRef self)
    {
        var (vm, uuid) = VmOf(context, self);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        DeviceOperations.AssertRunning(context.Snapshot.Get(vm));
        await PlugHeldAsync(context, self, vm, uuid, hold);
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VbdOperations>(VbdOperations.Unplug)]
    public async ValueTask Unplug(CallContext context, VBDRef self) => await UnplugAsync(context, self, force: false);

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VbdOperations>(VbdOperations.UnplugForce)]
    public async ValueTask UnplugForce(CallContext context, VBDRef self) => await UnplugAsync(context, self, force: true);

    /// <summary>
    /// Puts a disk into an empty drive: only the records for a halted VM, the backend's insert
    /// for a running HVM guest (its emulated drive), a plug for a PV guest (xapi_xenops.ml vbd_insert).
    /// </summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VbdOperations>(VbdOperations.Insert)]
    public async ValueTask Insert(CallContext context, VBDRef vbd, VDIRef vdi)
    {
        var (vm, uuid) = VmOf(context, vbd);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var snapshot = context.Snapshot;
        var record = snapshot.Get(vbd);
        var owner = snapshot.Get(vm);
        // The real server's own order (assert_ok_to_insert), re-checked now that the VM is held.
        AssertNotSuspended(owner);
        AssertRemovable(record);
        if (!record.Empty)
        {
            throw XenApiErrors.VbdNotEmpty(vbd.Value);
        }
        var disk = snapshot.Get(vdi);
        if (!disk.Managed)
        {
            throw XenApiErrors.VdiNotManaged(vdi.Value);
        }
        if (owner.PowerState == VmPowerState.Halted)
        {
            await SetMediaAsync(context, vbd, vm, vdi);
            return;
        }
        if (await HasEmulatedDrivesAsync(uuid, hold))
        {
            await runtime.RunHeldAsync(context, vm, uuid, hold, async token => await runtime.Hypervisor.InsertVbdAsync(uuid, DomainConfigs.DeviceKey(record), new DiskBinding(disk.Uuid), token));
            if (context.Snapshot.Get(vbd) is { Empty: true } || context.Snapshot.Get(vbd).VDI != vdi)
            {
                throw XenApiErrors.InternalError($"vbd_insert_hvm: The VBD {vbd.Value} is empty");
            }
            return;
        }
        await SetMediaAsync(context, vbd, vm, vdi);
        await PlugHeldAsync(context, vbd, vm, uuid, hold);
    }

    /// <summary>Empties a drive: the records for a halted VM, the backend's eject for HVM, an unplug for PV (xapi_xenops.ml vbd_eject).</summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VbdOperations>(VbdOperations.Eject)]
    public async ValueTask Eject(CallContext context, VBDRef vbd)
    {
        var (vm, uuid) = VmOf(context, vbd);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var snapshot = context.Snapshot;
        var record = snapshot.Get(vbd);
        var owner = snapshot.Get(vm);
        // The real server's own order (assert_ok_to_eject).
        AssertRemovable(record);
        if (record.Empty)
        {
            throw XenApiErrors.VbdIsEmpty(vbd.Value);
        }
        AssertNotSuspended(owner);
        if (owner.PowerState == VmPowerState.Halted)
        {
            await SetMediaAsync(context, vbd, vm, VDIRef.Null);
        }
        else if (await HasEmulatedDrivesAsync(uuid, hold))
        {
            await runtime.RunHeldAsync(context, vm, uuid, hold, async token => await runtime.Hypervisor.EjectVbdAsync(uuid, DomainConfigs.DeviceKey(record), token));
            if (context.Snapshot.Get(vbd) is { Empty: false } || !context.Snapshot.Get(vbd).VDI.IsNull)
            {
                throw XenApiErrors.InternalError($"vbd_eject_hvm: The VBD {vbd.Value} has not been emptied");
            }
        }
        else
        {
            await UnplugHeldAsync(context, vbd, vm, uuid, force: false, hold);
            await SetMediaAsync(context, vbd, vm, VDIRef.Null);
        }
        // The disc is free again: its own operations no longer count this drive.
        context.Write(tx => RefreshDisk(tx, record.VDI));
        await context.SettledAsync();
    }

    private static void RefreshDisk(Database.Transaction tx, VDIRef vdi)
    {
        if (!tx.TryGet(vdi, out var disk))
        {
            return;
        }
        var inProgress = disk.CurrentOperations.Values.Select(o => (string)o!).ToList();
        var allowed = Xapi.Storage.Service.StorageAllowedOperations.ForVdi(tx, vdi, tx.GetRowValues(VDIRef.Class, vdi.Value), inProgress)
            .Select(o => VdiOperationsWire.Parse((string)o!)).ToArray();
        if (!allowed.SequenceEqual(disk.AllowedOperations))
        {
            tx.Update(vdi, v => v.AllowedOperations = allowed);
        }
    }

    private async ValueTask UnplugAsync(CallContext context, VBDRef self, bool force)
    {
        var (vm, uuid) = VmOf(context, self);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        DeviceOperations.AssertRunning(context.Snapshot.Get(vm));
        await UnplugHeldAsync(context, self, vm, uuid, force, hold);
    }

    private async ValueTask PlugHeldAsync(CallContext context, VBDRef self, VMRef vm, Guid uuid, VmRuntime.Hold hold)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.Get(self);
        var owner = snapshot.Get(vm);
        // HVM guests cannot have read-only disks (CA-83260); CDs are read-only by nature.
        if (VbdAllowedOperations.IsHvm(owner) && record.Type != VbdType.CD && record.Mode == Xapi.Model.VbdMode.RO)
        {
            throw XenApiErrors.DiskVbdMustBeReadwriteForHvm(self.Value);
        }
        // The same description of the device as at VM.start; an empty drive of a PV guest has none.
        var key = DomainConfigs.DeviceKey(record);
        if (DomainConfigs.Of(snapshot, owner).Vbds.FirstOrDefault(v => v.Device == key) is { } config)
        {
            await runtime.RunHeldAsync(context, vm, uuid, hold, async token =>
            {
                try
                {
                    await runtime.Hypervisor.PlugVbdAsync(uuid, config, token);
                }
                catch (DeviceAlreadyExistsException)
                {
                    // Plugged already: the fold records it.
                }
            });
        }
        if (!context.Snapshot.Get(self).CurrentlyAttached)
        {
            throw XenApiErrors.InternalError($"vbd_plug: Unable to plug VBD {self.Value}");
        }
    }

    private async ValueTask UnplugHeldAsync(CallContext context, VBDRef self, VMRef vm, Guid uuid, bool force, VmRuntime.Hold hold)
    {
        var key = DomainConfigs.DeviceKey(context.Snapshot.Get(self));
        await runtime.RunHeldAsync(context, vm, uuid, hold, async token =>
        {
            try
            {
                await runtime.Hypervisor.UnplugVbdAsync(uuid, key, force, token);
            }
            catch (DeviceNotFoundException)
            {
                // Not plugged: the fold records it detached.
            }
        });
        if (context.Snapshot.Get(self).CurrentlyAttached)
        {
            throw XenApiErrors.InternalError($"vbd_unplug: Unable to unplug VBD {self.Value}");
        }
    }

    /// <summary>Whether the VM's domain has emulated (qemu) drives, which take media in place: an HVM domain (xapi_xenops.ml has_qemu).</summary>
    private async ValueTask<bool> HasEmulatedDrivesAsync(Guid uuid, VmRuntime.Hold hold) =>
        await runtime.Hypervisor.TryGetDomainAsync(uuid, hold.Token) is { Type: Xapi.Xenops.DomainType.Hvm };

    private static async ValueTask SetMediaAsync(CallContext context, VBDRef vbd, VMRef vm, VDIRef vdi)
    {
        context.Write(tx =>
        {
            tx.Update(vbd, b =>
            {
                b.VDI = vdi;
                b.Empty = vdi.IsNull;
            });
            VMApi.RefreshAllowedOperations(tx, vm);
        });
        // What follows (a plug) reads the drive back.
        await context.SettledAsync();
    }

    private static (VMRef Vm, Guid Uuid) VmOf(CallContext context, VBDRef vbd)
    {
        var vm = context.Snapshot.Get(vbd).VM;
        return (vm, Guid.Parse(context.Snapshot.Get(vm).Uuid));
    }

    private static void AssertNotSuspended(VMRecord vm)
    {
        if (vm.PowerState == VmPowerState.Suspended)
        {
            throw XenApiErrors.VmBadPowerState(vm.Ref.Value, $"{VmAllowedOperations.Spelled(VmPowerState.Halted)}, {VmAllowedOperations.Spelled(VmPowerState.Running)}",
                VmAllowedOperations.Spelled(VmPowerState.Suspended));
        }
    }

    private static void AssertRemovable(VBDRecord vbd)
    {
        if (vbd.Type != VbdType.CD)
        {
            throw XenApiErrors.VbdNotRemovableMedia(vbd.Ref.Value);
        }
    }
}
