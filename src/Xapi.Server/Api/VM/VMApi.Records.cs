using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// <c>VM.create</c> and <c>VM.destroy</c> as real hosts run them (xapi_vm.ml, xapi_vm_helpers.ml):
/// create stores a halted VM whatever the record says about its runtime state, with its
/// metrics and a MAC seed; destroy refuses a VM that may be running and takes the records it
/// owns with it.
/// </summary>
public sealed partial class VMApi : IObjectLifecycle
{
    // other_config key VIF.create derives MACs from (xapi_globs.ml).
    internal const string MacSeedKey = "mac_seed";

    // A VIF wanting a hardware platform version: has_vendor_device needs 2 (xapi_globs.ml).
    private const long VendorDeviceHardwarePlatformVersion = 2;

    ClassMeta IObjectLifecycle.Class => VMRef.Class;

    ValueTask<string> IObjectLifecycle.CreateAsync(CallContext context, object?[] values)
    {
        NullForEmptyReferences(values);
        var requested = new VMValues(values);
        var reference = new VMRef(XapiDatabase.NewRef());
        var suspended = requested.PowerState == VmPowerState.Suspended;
        // Only a suspended VM brings its runtime state along; it must then be complete. Real
        // hosts name the ref the VM would have had (and leave its metrics row behind; here
        // nothing is written).
        if (suspended && (requested.LastBootCPUFlags.Count == 0 || requested.LastBootedRecord.Length == 0 || requested.SuspendVDI.IsNull))
        {
            throw XenApiErrors.VmBadPowerState(reference.Value, VmDestroyRule.Lower(VmPowerState.Halted), VmDestroyRule.Lower(VmPowerState.Suspended));
        }
        var requestedDomainType = requested.DomainType;
        return ValueTask.FromResult(context.Write(tx =>
        {
            var metrics = tx.CreateVMMetrics(m =>
            {
                m.Uuid = Guid.NewGuid().ToString("D");
                m.VCPUsUtilisation = ValueMap.Empty.With(0L, 0.0);
                m.CurrentDomainType = suspended ? requestedDomainType : DomainType.Unspecified;
            });
            var vm = new VMValues(values)
            {
                Uuid = Guid.NewGuid().ToString("D"),
                PowerState = suspended ? VmPowerState.Suspended : VmPowerState.Halted,
                AllowedOperations = [],
                CurrentOperations = ValueMap.Empty,
                BlockedOperations = ValueMap.Empty,
                IsDefaultTemplate = false,
                IsASnapshot = false,
                SnapshotOf = VMRef.Null,
                Parent = VMRef.Null,
                SnapshotTime = XType.Epoch,
                SnapshotInfo = ValueMap.Empty,
                SnapshotMetadata = "",
                TransportableSnapshotId = "",
                ResidentOn = HostRef.Null,
                ScheduledToBeResidentOn = HostRef.Null,
                ProtectionPolicy = VMPPRef.Null,
                IsSnapshotFromVmpp = false,
                SnapshotSchedule = VMSSRef.Null,
                IsVmssSnapshot = false,
                Domid = -1,
                Domarch = "",
                IsControlDomain = false,
                Metrics = metrics,
                GuestMetrics = VMGuestMetricsRef.Null,
                Blobs = ValueMap.Empty,
                BiosStrings = ValueMap.Empty,
                RequiresReboot = false,
                PendingGuidances = [],
                PendingGuidancesRecommended = [],
                PendingGuidancesFull = [],
                // The NVRAM check real hosts run finds nothing to update without EFI variables to inspect.
                SecurebootCertificatesState = VmSecurebootCertificatesState.Ok,
            };
            if (!suspended)
            {
                vm.SuspendVDI = VDIRef.Null;
                vm.LastBootedRecord = "";
                vm.LastBootCPUFlags = ValueMap.Empty;
            }
            if (!vm.OtherConfig.ContainsKey(MacSeedKey))
            {
                vm.OtherConfig = vm.OtherConfig.With(MacSeedKey, Guid.NewGuid().ToString("D"));
            }
            if (vm.DomainType == DomainType.Unspecified)
            {
                // Clients that predate domain_type say HVM by a boot policy.
                vm.DomainType = vm.HVMBootPolicy.Length == 0 ? DomainType.Pv : DomainType.Hvm;
            }
            vm.MemoryOverhead = VmMemoryOverhead.Bytes(vm.MemoryStaticMax, vm.VCPUsMax, vm.HVMShadowMultiplier, vm.DomainType);
            if (vm.HasVendorDevice && vm.HardwarePlatformVersion < VendorDeviceHardwarePlatformVersion)
            {
                vm.HardwarePlatformVersion = VendorDeviceHardwarePlatformVersion;
            }
            var created = new VMRef(tx.CreateRowCheckingReferences(VMRef.Class, values, reference.Value));
            RefreshAllowedOperations(tx, VMRef.Class, created.Value);
            return created.Value;
        }));
    }

    ValueTask IObjectLifecycle.DestroyAsync(CallContext context, string reference)
    {
        var self = new VMRef(reference);
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            // Whether destroy may run at all (power state, template, dom0) the operation stage decided
            // before registering it, from the VM operation table.
            foreach (var child in vm.Children)
            {
                tx.Update(child, c => c.Parent = vm.Parent);
            }
            foreach (var vtpm in vm.VTPMs)
            {
                tx.Delete(vtpm);
            }
            foreach (var blob in vm.Blobs.Values.OfType<string>().Select(b => new BlobRef(b)))
            {
                if (tx.Exists(blob))
                {
                    tx.Delete(blob);
                }
            }
            if (vm.OtherConfig.TryGetValue(VmDestroyRule.DefaultTemplateKey, out var defaultTemplate) && defaultTemplate is "true")
            {
                // Declared with [vm]; real hosts send no parameters.
                throw new XenApiException(ErrorCodes.VmCannotDeleteDefaultTemplate);
            }
            foreach (var vbd in vm.VBDs)
            {
                DeleteIfExists(tx, tx.Get(vbd).Metrics);
                tx.Delete(vbd);
            }
            foreach (var vif in vm.VIFs)
            {
                DeleteIfExists(tx, tx.Get(vif).Metrics);
                tx.Delete(vif);
            }
            foreach (var vgpu in vm.VGPUs)
            {
                tx.Delete(vgpu);
            }
            foreach (var vusb in vm.VUSBs)
            {
                tx.Delete(vusb);
            }
            DeleteIfExists(tx, vm.Metrics);
            DeleteIfExists(tx, vm.GuestMetrics);
            // The appliance and attached PCIs point at the VM from its own row, so they go with it.
            // VDIs (the suspend image included) and snapshots stay, as on real hosts.
            tx.Delete(self);
        });
        return ValueTask.CompletedTask;
    }

    private static void DeleteIfExists<TRef>(Transaction tx, TRef reference) where TRef : IObjectRef
    {
        if (tx.Exists(reference))
        {
            tx.Delete(reference);
        }
    }

    // Clients such as nova send "" for a reference they leave unset: real hosts store it as
    // given; here it becomes OpaqueRef:NULL wherever NULL is allowed, so the database never
    // holds a reference to nothing.
    private static void NullForEmptyReferences(object?[] values)
    {
        foreach (var field in VMRef.Class.Fields)
        {
            if (field.Type.Kind == XTypeKind.Ref && values[field.Ordinal] is "")
            {
                values[field.Ordinal] = XType.NullRef;
                if (!field.AllowsNullIn(values))
                {
                    values[field.Ordinal] = "";
                }
            }
        }
    }

    internal void RefreshAllowedOperations(Transaction tx, ClassMeta cls, string reference)
    {
        var field = cls.AllowedOperationsField!;
        var current = cls.CurrentOperationsField!;
        tx.UpdateRow(cls, reference, row => row[field.Ordinal] = rules.For(cls).Allowed(tx, reference, row,
            ((ValueMap)row[current.Ordinal]!).Values.Select(v => (string)v!).ToList()));
    }
}
