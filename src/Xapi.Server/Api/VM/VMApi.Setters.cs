using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;

namespace Xapi.Server.Api;

/// <summary>
/// The VM setters shaped like field accessors whose real implementations check more than the
/// field's type (xapi_vm.ml, xapi_vm_helpers.ml, message_forwarding.ml): the operation they run
/// as, the values they refuse, and the fields they keep in step (memory_overhead, allowed_operations,
/// domain_type with HVM_boot_policy). VM.other_config and VM.platform stay plain accessors: their
/// only extra rule in real hosts is per-key RBAC, which no class has here yet.
/// </summary>
public sealed partial class VMApi
{
    // INVALID_VALUE texts exactly as real hosts send them (xapi_vm.ml).
    private const string VcpuOrderRule = "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max";
    private const string VcpusAtStartupOnDom0 = "set_VCPUs_at_startup is not allowed on dom0";
    private const string ShadowMultiplierParameter = "multiplier";
    private const string DomainTypeParameter = "domain_type";
    private const string HaRestartPriorityParameter = "ha_restart_priority";
    private const string AppliancesRefused = "Control domains, templates and snapshots cannot be assigned to appliances.";
    private const string GroupsRefused = "Control domains, templates, and snapshots cannot be added to VM groups.";
    private const string CbtMetadataTypeName = "CBT metadata";
    private const string BiosUnknownKey = "Unknown key";
    private const string BiosEmptyValue = "Value provided is empty";
    private const int BiosStringLimit = 512;

    // HVM guests boot from their BIOS's device order unless told otherwise (constants.ml hvm_default_boot_policy).
    internal const string HvmDefaultBootPolicy = "BIOS order";

    // ha_restart_priority's values (constants.ml ha_valid_restart_priorities).
    private const string HaRestart = "restart";
    private const string HaBestEffort = "best-effort";

    // The BIOS strings a client may set, and what every VM gets for the others (constants.ml).
    private static readonly string[] SettableBiosStrings =
    [
        "bios-vendor", "bios-version", "system-manufacturer", "system-product-name", "system-version", "system-serial-number",
        "baseboard-manufacturer", "baseboard-product-name", "baseboard-version", "baseboard-serial-number", "baseboard-asset-tag",
        "baseboard-location-in-chassis", "enclosure-asset-tag",
    ];

    private static readonly (string Key, string Value)[] GenericBiosStrings =
    [
        ("bios-vendor", "Xen"), ("bios-version", ""), ("system-manufacturer", "Xen"), ("system-product-name", "HVM domU"),
        ("system-version", ""), ("system-serial-number", ""), ("baseboard-manufacturer", ""), ("baseboard-product-name", ""),
        ("baseboard-version", ""), ("baseboard-serial-number", ""), ("baseboard-asset-tag", ""), ("baseboard-location-in-chassis", ""),
        ("enclosure-asset-tag", ""), ("hp-rombios", ""), ("oem-1", "Xen"), ("oem-2", "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"),
    ];

    [RunsAs<VmOperations>(VmOperations.ChangingVCPUs)]
    public ValueTask SetVCPUsMax(CallContext context, VMRef self, long value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            // dom0 never gets here: the operation stage refuses changing_VCPUs on it.
            if (value < 1 || value < vm.VCPUsAtStartup)
            {
                throw XenApiErrors.InvalidValue(VcpuOrderRule, Text(value));
            }
            tx.Update(self, v => v.VCPUsMax = value);
            UpdateMemoryOverhead(tx, self);
            RequireRebootIfRunningControlDomain(tx, vm);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>Runs as no operation and in any power state, as real hosts let it (XO calls it on running VMs).</summary>
    public ValueTask SetVCPUsAtStartup(CallContext context, VMRef self, long value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            if (IsDomainZero(tx, vm))
            {
                throw XenApiErrors.OperationNotAllowed(VcpusAtStartupOnDom0);
            }
            if (value < 1 || value > vm.VCPUsMax)
            {
                throw XenApiErrors.InvalidValue(VcpuOrderRule, Text(value));
            }
            tx.Update(self, v => v.VCPUsAtStartup = value);
            UpdateMemoryOverhead(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingShadowMemory)]
    public ValueTask SetHVMShadowMultiplier(CallContext context, VMRef self, double value)
    {
        if (value < 1)
        {
            throw XenApiErrors.InvalidValue(ShadowMultiplierParameter, OcamlFloat.Format(value));
        }
        context.Write(tx =>
        {
            tx.Update(self, v => v.HVMShadowMultiplier = value);
            UpdateMemoryOverhead(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>Clients older than domain_type say HVM by a boot policy: the domain type follows it.</summary>
    public ValueTask SetHVMBootPolicy(CallContext context, VMRef self, string value)
    {
        context.Write(tx => tx.Update(self, v =>
        {
            v.DomainType = value.Length == 0 ? DomainType.Pv : DomainType.Hvm;
            v.HVMBootPolicy = value;
        }));
        return ValueTask.CompletedTask;
    }

    public ValueTask SetDomainType(CallContext context, VMRef self, DomainType value)
    {
        if (value == DomainType.Unspecified)
        {
            throw XenApiErrors.InvalidValue(DomainTypeParameter, value.ToWire());
        }
        context.Write(tx => tx.Update(self, v =>
        {
            v.DomainType = value;
            v.HVMBootPolicy = value == DomainType.Hvm ? HvmDefaultBootPolicy : "";
        }));
        return ValueTask.CompletedTask;
    }

    /// <summary>Real hosts store any value here; start refuses the ones a domain of its type cannot honour.</summary>
    public ValueTask SetActionsAfterCrash(CallContext context, VMRef self, OnCrashBehaviour value)
    {
        context.Write(tx => tx.Update(self, v => v.ActionsAfterCrash = value));
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingNVRAM)]
    public ValueTask SetNVRAM(CallContext context, VMRef self, ValueMap value)
    {
        context.Write(tx => tx.Update(self, v => v.NVRAM = value));
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingNVRAM)]
    public ValueTask AddToNVRAM(CallContext context, VMRef self, string key, string value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            var nvram = vm.NVRAM;
            if (nvram.ContainsKey(key))
            {
                throw XenApiErrors.MapDuplicateKey(VMRef.Class.Name, VMRef.Class.Fields[VMFields.NVRAM].Name, vm.Uuid, key);
            }
            tx.Update(self, v => v.NVRAM = nvram.With(key, value));
        });
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingNVRAM)]
    public ValueTask RemoveFromNVRAM(CallContext context, VMRef self, string key)
    {
        context.Write(tx => tx.Update(self, v => v.NVRAM = v.NVRAM.Without(key)));
        return ValueTask.CompletedTask;
    }

    public ValueTask SetBlockedOperations(CallContext context, VMRef self, ValueMap value)
    {
        context.Write(tx =>
        {
            tx.Update(self, v => v.BlockedOperations = value);
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask AddToBlockedOperations(CallContext context, VMRef self, VmOperations key, string value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            var blocked = vm.BlockedOperations;
            if (blocked.ContainsKey(key.ToWire()))
            {
                throw XenApiErrors.MapDuplicateKey(VMRef.Class.Name, VMRef.Class.Fields[VMFields.BlockedOperations].Name, vm.Uuid, key.ToWire());
            }
            tx.Update(self, v => v.BlockedOperations = blocked.With(key.ToWire(), value));
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask RemoveFromBlockedOperations(CallContext context, VMRef self, VmOperations key)
    {
        context.Write(tx =>
        {
            tx.Update(self, v => v.BlockedOperations = v.BlockedOperations.Without(key.ToWire()));
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>Deprecated in favour of ha_restart_priority, which it sets ("restart" or "").</summary>
    public ValueTask SetHaAlwaysRun(CallContext context, VMRef self, bool value) =>
        SetHaRestartPriority(context, self, value ? HaRestart : "");

    public ValueTask SetHaRestartPriority(CallContext context, VMRef self, string value)
    {
        if (value is not (HaRestart or HaBestEffort or ""))
        {
            throw XenApiErrors.InvalidValue(HaRestartPriorityParameter, value);
        }
        // HA is never enabled here, so no failover plan can break (xapi_ha_vm_failover).
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            if (vm.HaRestartPriority == value)
            {
                return;
            }
            tx.Update(self, v =>
            {
                v.HaRestartPriority = value;
                if (vm.PowerState == VmPowerState.Running)
                {
                    // A running VM is protected (or not) at once.
                    v.HaAlwaysRun = value == HaRestart;
                }
            });
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetHasVendorDevice(CallContext context, VMRef self, bool value)
    {
        context.Write(tx =>
        {
            AssertPowerState(tx.Get(self), VmPowerState.Halted);
            tx.Update(self, v => v.HasVendorDevice = value);
            if (value && tx.Get(self).HardwarePlatformVersion < VendorDeviceHardwarePlatformVersion)
            {
                tx.Update(self, v => v.HardwarePlatformVersion = VendorDeviceHardwarePlatformVersion);
            }
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Only a suspended VM's image may be replaced. Real hosts then compare the two images'
    /// checksums (an internal VDI.checksum this datamodel has not got): a different VDI is stored as given.
    /// </summary>
    public ValueTask SetSuspendVDI(CallContext context, VMRef self, VDIRef value)
    {
        context.Write(tx =>
        {
            AssertPowerState(tx.Get(self), VmPowerState.Suspended);
            if (tx.Get(value).Type == VdiType.CbtMetadata)
            {
                throw XenApiErrors.VdiIncompatibleType(self.Value, CbtMetadataTypeName);
            }
            tx.Update(self, v => v.SuspendVDI = value);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetStartDelay(CallContext context, VMRef self, long value) =>
        SetNonNegative(context, self, value, VMFields.StartDelay, (v, x) => v.StartDelay = x);

    public ValueTask SetShutdownDelay(CallContext context, VMRef self, long value) =>
        SetNonNegative(context, self, value, VMFields.ShutdownDelay, (v, x) => v.ShutdownDelay = x);

    public ValueTask SetOrder(CallContext context, VMRef self, long value) =>
        SetNonNegative(context, self, value, VMFields.Order, (v, x) => v.Order = x);

    private static ValueTask SetNonNegative(CallContext context, VMRef self, long value, int field, Action<VMValues, long> set)
    {
        if (value < 0)
        {
            throw XenApiErrors.InvalidValue($"{VMRef.Class.Fields[field].Name} must be non-negative", Text(value));
        }
        context.Write(tx => tx.Update(self, v => set(v, value)));
        return ValueTask.CompletedTask;
    }

    public ValueTask SetAppliance(CallContext context, VMRef self, VMApplianceRef value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            if (vm.IsControlDomain || vm.IsATemplate || vm.IsASnapshot)
            {
                throw XenApiErrors.OperationNotAllowed(AppliancesRefused);
            }
            tx.Update(self, v => v.Appliance = value);
            tx.CheckReferences(VMRef.Class.Fields[VMFields.Appliance], tx.GetRowValues(VMRef.Class, self.Value));
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetGroups(CallContext context, VMRef self, IReadOnlyList<VMGroupRef> value)
    {
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            if (vm.IsControlDomain || vm.IsATemplate || vm.IsASnapshot)
            {
                throw XenApiErrors.OperationNotAllowed(GroupsRefused);
            }
            if (value.Count > 1)
            {
                throw XenApiErrors.TooManyGroups();
            }
            tx.Update(self, v => v.Groups = value.ToArray());
            tx.CheckReferences(VMRef.Class.Fields[VMFields.Groups], tx.GetRowValues(VMRef.Class, self.Value));
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetSnapshotSchedule(CallContext context, VMRef self, VMSSRef value)
    {
        context.Write(tx =>
        {
            // Real hosts name only the schedule; errors.json declares a field and a value.
            if (!value.IsNull && !tx.Exists(value))
            {
                throw new XenApiException(ErrorCodes.InvalidValue, value.Value);
            }
            var vm = tx.Get(self);
            if (!value.IsNull)
            {
                if (vm.IsControlDomain)
                {
                    throw new XenApiException(ErrorCodes.InvalidValue, value.Value);
                }
                if (vm.IsATemplate)
                {
                    throw XenApiErrors.VmIsTemplate(self.Value);
                }
            }
            tx.Update(self, v => v.SnapshotSchedule = value);
            VmAllowedOperations.Refresh(tx, self);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetBiosStrings(CallContext context, VMRef self, ValueMap value)
    {
        foreach (var (key, raw) in value)
        {
            var name = (string)key;
            var text = (string?)raw ?? "";
            if (!SettableBiosStrings.Contains(name))
            {
                throw XenApiErrors.InvalidValue(name, BiosUnknownKey);
            }
            if (text.Length == 0)
            {
                throw XenApiErrors.InvalidValue(name, BiosEmptyValue);
            }
            if (text.Length > BiosStringLimit)
            {
                throw XenApiErrors.InvalidValue(name, $"{text} has length more than {BiosStringLimit} characters");
            }
            if (text.Any(c => c < ' ' || c >= (char)127))
            {
                throw XenApiErrors.InvalidValue(name, $"{text} has non-printable ASCII characters");
            }
        }
        context.Write(tx =>
        {
            if (tx.Get(self).BiosStrings.Count > 0)
            {
                throw XenApiErrors.VmBiosStringsAlreadySet();
            }
            var merged = ValueMap.FromPairs(GenericBiosStrings.Select(g =>
                new KeyValuePair<object, object?>(g.Key, value.TryGetValue(g.Key, out var given) ? given : g.Value)));
            tx.Update(self, v => v.BiosStrings = merged);
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// VM_BAD_POWER_STATE as real hosts send it outside the operation table
    /// (<c>assert_initial_power_state_in</c>): the expected states joined by ";".
    /// </summary>
    private static void AssertPowerState(VMRecord vm, params VmPowerState[] allowed)
    {
        if (!allowed.Contains(vm.PowerState))
        {
            throw XenApiErrors.VmBadPowerState(vm.Ref.Value, string.Join(';', allowed.Select(VmAllowedOperations.Spelled)), VmAllowedOperations.Spelled(vm.PowerState));
        }
    }

    /// <summary>Whether the VM is the control domain of the host it runs on (helpers.ml is_domain_zero).</summary>
    private static bool IsDomainZero(IRowReader db, VMRecord vm) =>
        vm.IsControlDomain && db.TryGet(vm.ResidentOn, out var host) && host.ControlDomain == vm.Ref;

    /// <summary>A running control domain takes new limits only at its next boot.</summary>
    private static void RequireRebootIfRunningControlDomain(Transaction tx, VMRecord before)
    {
        if (before.IsControlDomain && before.PowerState == VmPowerState.Running)
        {
            tx.Update(before.Ref, v => v.RequiresReboot = true);
        }
    }

    /// <summary>update_memory_overhead: VM.memory_overhead from the VM as it now is.</summary>
    private static void UpdateMemoryOverhead(Transaction tx, VMRef self)
    {
        var vm = tx.Get(self);
        var overhead = VmMemoryOverhead.Bytes(vm.MemoryStaticMax, vm.VCPUsMax, vm.HVMShadowMultiplier, vm.DomainType);
        if (overhead != vm.MemoryOverhead)
        {
            tx.Update(self, v => v.MemoryOverhead = overhead);
        }
    }

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}
