using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>
/// <c>VM.allowed_operations</c> and the check every VM operation passes before it runs, as real
/// hosts decide them (xapi_vm_lifecycle.ml, <c>check_operation_error</c>): the first refusal in
/// a fixed order wins: blocked, power state, operations in progress, template, snapshot,
/// provision/revert, mobility, nested virtualisation, control domain, guest features, quiesce,
/// VDI on-boot mode, PCI, vGPU, VUSB, appliance, protection policy, snapshot schedule, system
/// domain, vTPM. Messages run with <c>strict</c> on, as <c>with_vm_operation</c> does.
/// </summary>
public sealed class VmAllowedOperations : IOperationRule
{
    // Never listed in allowed_operations even when they may run (xapi_vm_lifecycle.ml ignored_ops).
    private static readonly HashSet<VmOperations> NotListed =
    [
        VmOperations.CreateTemplate, VmOperations.PowerStateReset, VmOperations.Csvm, VmOperations.GetBootRecord, VmOperations.SendSysrq,
        VmOperations.SendTrigger, VmOperations.QueryServices, VmOperations.Shutdown, VmOperations.CallPlugin, VmOperations.ChangingMemoryLive,
        VmOperations.AwaitingMemoryLive, VmOperations.ChangingMemoryLimits, VmOperations.ChangingShadowMemoryLive, VmOperations.ChangingVCPUs,
        VmOperations.AssertOperationValid, VmOperations.DataSourceOp, VmOperations.UpdateAllowedOperations, VmOperations.Import, VmOperations.Reverting,
    ];

    // Real hosts fold over the enum putting each allowed operation in front: the stored list is in reverse enum order.
    private static readonly VmOperations[] Listed = Enum.GetValues<VmOperations>().Where(o => !NotListed.Contains(o)).Reverse().ToArray();

    private static readonly VmPowerState[] AllStates = [VmPowerState.Halted, VmPowerState.Paused, VmPowerState.Suspended, VmPowerState.Running];

    public ClassMeta Class => VMRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        Compute(VMRecord.Wrap(db, reference, values)).Select(o => (object?)o.ToWire()).ToArray();

    public XenApiException? Check(IRowReader db, string reference, IReadOnlyList<object?> values, string operation) =>
        Check(VMRecord.Wrap(db, reference, values), VmOperationsWire.Parse(operation));

    /// <summary>The first error that refuses <paramref name="op"/> on <paramref name="vm"/>, or null when it may run.</summary>
    /// <param name="strict">Off only where the caller forces the operation (a forced pool_migrate): the guest's help is then not required.</param>
    public static XenApiException? Check(VMRecord vm, VmOperations op, bool strict = true) => new VmFacts(vm).Check(op, strict);

    /// <summary>The operations <c>allowed_operations</c> lists for <paramref name="vm"/> as it is.</summary>
    public static IReadOnlyList<VmOperations> Compute(VMRecord vm)
    {
        var facts = new VmFacts(vm);
        return Listed.Where(op => facts.Check(op, strict: true) is null).ToArray();
    }

    /// <summary>Recomputes the stored <c>allowed_operations</c> of a VM, as real hosts do after each change of its state.</summary>
    public static void Refresh(Transaction tx, VMRef vm)
    {
        if (!tx.TryGet(vm, out var record))
        {
            return;
        }
        var allowed = Compute(record);
        if (!allowed.SequenceEqual(record.AllowedOperations))
        {
            tx.Update(vm, v => v.AllowedOperations = allowed.ToArray());
        }
    }

    /// <summary>
    /// The power states an operation may start from, in the order real hosts list them in
    /// VM_BAD_POWER_STATE's "expected" (xapi_vm_lifecycle.ml <c>allowed_power_states</c>).
    /// </summary>
    public static IReadOnlyList<VmPowerState> PowerStatesFor(VMRecord vm, VmOperations op, bool cloneSuspendedVms) => op switch
    {
        VmOperations.Import => [],
        VmOperations.ChangingVCPUs or VmOperations.ChangingStaticRange or VmOperations.ChangingMemoryLimits =>
            vm.IsControlDomain ? [VmPowerState.Halted, VmPowerState.Running] : [VmPowerState.Halted],
        VmOperations.ChangingShadowMemory or VmOperations.ChangingNVRAM or VmOperations.MakeIntoTemplate or VmOperations.Provision
            or VmOperations.Start or VmOperations.StartOn or VmOperations.CreateVtpm => [VmPowerState.Halted],
        VmOperations.Unpause => [VmPowerState.Paused],
        VmOperations.Csvm or VmOperations.Resume or VmOperations.ResumeOn => [VmPowerState.Suspended],
        VmOperations.AwaitingMemoryLive or VmOperations.CallPlugin or VmOperations.CleanReboot or VmOperations.CleanShutdown
            or VmOperations.ChangingMemoryLive or VmOperations.ChangingShadowMemoryLive or VmOperations.ChangingVCPUsLive
            or VmOperations.DataSourceOp or VmOperations.Pause or VmOperations.PoolMigrate or VmOperations.SendSysrq or VmOperations.SendTrigger
            or VmOperations.SnapshotWithQuiesce or VmOperations.Sysprep or VmOperations.Suspend => [VmPowerState.Running],
        VmOperations.ChangingDynamicRange => [VmPowerState.Halted, VmPowerState.Running],
        VmOperations.Clone or VmOperations.Copy =>
            vm.IsASnapshot || cloneSuspendedVms ? [VmPowerState.Halted, VmPowerState.Suspended] : [VmPowerState.Halted],
        VmOperations.CreateTemplate or VmOperations.Destroy or VmOperations.Export => [VmPowerState.Halted, VmPowerState.Suspended],
        VmOperations.HardReboot => [VmPowerState.Paused, VmPowerState.Running],
        VmOperations.Checkpoint or VmOperations.GetBootRecord or VmOperations.Shutdown or VmOperations.HardShutdown =>
            [VmPowerState.Paused, VmPowerState.Suspended, VmPowerState.Running],
        VmOperations.MigrateSend => [VmPowerState.Halted, VmPowerState.Suspended, VmPowerState.Running],
        _ => AllStates,
    };

    /// <summary>A power state as real hosts spell it in VM_BAD_POWER_STATE: lower case.</summary>
    public static string Spelled(VmPowerState state) => state.ToWire().ToLowerInvariant();

    /// <summary>
    /// An operation as real hosts name it in OTHER_OPERATION_IN_PROGRESS, VM_IS_TEMPLATE and
    /// VM_IS_SNAPSHOT (record_util.ml): the wire name except for a few they spell differently or
    /// do not know.
    /// </summary>
    public static string Named(VmOperations op) => op switch
    {
        VmOperations.AssertOperationValid => "assertoperationvalid",
        VmOperations.DataSourceOp => "data_sources_op",
        VmOperations.ChangingVCPUs or VmOperations.ChangingMemoryLimits or VmOperations.QueryServices or VmOperations.CreateTemplate => "(unknown operation)",
        _ => op.ToWire(),
    };

    internal static bool IsTrue(ValueMap map, string key) =>
        map.TryGetValue(key, out var value) && value is string text && (text == "1" || text.Equals("true", StringComparison.OrdinalIgnoreCase));

    // Everything check_operation_error reads, gathered once per VM and then asked per operation.
    private sealed class VmFacts
    {
        private readonly VMRecord _vm;
        private readonly string _ref;
        private readonly List<(string Task, VmOperations Op)> _current;
        private readonly VMMetricsRecord? _metrics;
        private readonly VMGuestMetricsRecord? _guest;
        private readonly bool _cloneSuspended;
        private readonly bool _isDomainZero;
        private readonly IRowReader _db;

        public VmFacts(VMRecord vm)
        {
            _vm = vm;
            _db = vm.Source;
            _ref = vm.Ref.Value;
            _current = vm.CurrentOperations.Select(p => ((string)p.Key, VmOperationsWire.Parse((string)p.Value!))).ToList();
            _metrics = _db.TryGet(vm.Metrics, out var metrics) ? metrics : null;
            _guest = _db.TryGet(vm.GuestMetrics, out var guest) ? guest : null;
            _cloneSuspended = _db.All<PoolRecord>().Any(p => p.OtherConfig.TryGetValue("allow_clone_suspended_vm", out var v) && (string?)v == "true");
            _isDomainZero = vm.IsControlDomain && _db.TryGet(vm.ResidentOn, out var host) && host.ControlDomain == vm.Ref;
        }

        private bool IsLive => _vm.PowerState is VmPowerState.Running or VmPowerState.Paused;

        public XenApiException? Check(VmOperations op, bool strict)
        {
            if (_vm.BlockedOperations.TryGetValue(op.ToWire(), out var reason))
            {
                return XenApiErrors.OperationBlocked(_ref, (string?)reason ?? "");
            }
            var states = PowerStatesFor(_vm, op, _cloneSuspended);
            if (!states.Contains(_vm.PowerState))
            {
                return XenApiErrors.VmBadPowerState(_ref, string.Join(", ", states.Select(Spelled)), Spelled(_vm.PowerState));
            }
            if (_current.Count > 0 && !IsAllowedConcurrently(op))
            {
                return InProgress();
            }
            if (_vm.IsATemplate && !_vm.IsASnapshot && TemplateRefuses(op))
            {
                // Real hosts name the operation too; errors.json declares only the VM.
                return new XenApiException(ErrorCodes.VmIsTemplate, _ref, Named(op));
            }
            if (_vm.IsASnapshot && op is not (VmOperations.Revert or VmOperations.Clone or VmOperations.Copy or VmOperations.Export
                    or VmOperations.Destroy or VmOperations.HardShutdown or VmOperations.MetadataExport))
            {
                return XenApiErrors.VmIsSnapshot(_ref, Named(op));
            }
            if (op == VmOperations.Provision && !_vm.IsATemplate)
            {
                return XenApiErrors.ProvisionOnlyAllowedOnTemplate();
            }
            if (op == VmOperations.Revert && !_vm.IsASnapshot)
            {
                return XenApiErrors.RevertOnlyAllowedOnSnapshot();
            }
            if (op is VmOperations.Suspend or VmOperations.Checkpoint or VmOperations.PoolMigrate or VmOperations.MigrateSend
                && strict && (Nomigrate || NestedVirt))
            {
                return XenApiErrors.VmIsImmobile(_ref);
            }
            if (op == VmOperations.ChangingDynamicRange && strict && NestedVirt)
            {
                return XenApiErrors.VmIsUsingNestedVirt(_ref);
            }
            if (ControlDomainRefusal(op) is { } control)
            {
                return control;
            }
            if (FeatureRefusal(op, strict) is { } feature)
            {
                return feature;
            }
            if (op == VmOperations.SnapshotWithQuiesce)
            {
                // Real hosts send only the VM; errors.json declares a second parameter.
                return new XenApiException(ErrorCodes.VmSnapshotWithQuiesceNotSupported, _ref);
            }
            if (OnBootRefusal(op) is { } onBoot)
            {
                return onBoot;
            }
            return OtherDeviceRefusal(op) ?? MembershipRefusal(op);
        }

        private bool IsAllowedConcurrently(VmOperations op)
        {
            bool Within(params VmOperations[] set) => set.Contains(op) && _current.All(c => set.Contains(c.Op));
            if (Within(VmOperations.Clone, VmOperations.Copy, VmOperations.Export)
                || Within(VmOperations.Snapshot, VmOperations.Checkpoint)
                || Within(VmOperations.GetBootRecord))
            {
                return true;
            }
            return op switch
            {
                VmOperations.HardShutdown => _current.All(c => c.Op != VmOperations.HardShutdown),
                VmOperations.HardReboot => _current.All(c => c.Op is not (VmOperations.HardShutdown or VmOperations.HardReboot)),
                VmOperations.Snapshot => _current is [(_, VmOperations.SnapshotWithQuiesce)],
                VmOperations.MetadataExport or VmOperations.CleanShutdown or VmOperations.CleanReboot => _current is [(_, VmOperations.MigrateSend)],
                _ => false,
            };
        }

        private XenApiException InProgress()
        {
            if (_current is [var only])
            {
                return XenApiErrors.OtherOperationInProgress(VMRef.Class.Name, _ref, Named(only.Op), only.Task);
            }
            return XenApiErrors.OtherOperationInProgress(VMRef.Class.Name, _ref,
                $"{{{string.Join(',', _current.Select(c => Named(c.Op)))}}}", $"{{{string.Join(',', _current.Select(c => c.Task))}}}");
        }

        private bool TemplateRefuses(VmOperations op)
        {
            if (op is VmOperations.ChangingDynamicRange or VmOperations.ChangingStaticRange or VmOperations.ChangingMemoryLimits
                or VmOperations.ChangingShadowMemory or VmOperations.ChangingVCPUs or VmOperations.ChangingNVRAM or VmOperations.Clone
                or VmOperations.Copy or VmOperations.Export or VmOperations.MetadataExport or VmOperations.Provision)
            {
                return false;
            }
            var defaultTemplate = _vm.IsDefaultTemplate || IsTrue(_vm.OtherConfig, "default_template");
            return !(op is VmOperations.Destroy or VmOperations.MigrateSend && !defaultTemplate);
        }

        // VM_metrics holds what the domain was started with; without it (not running) the VM's own platform decides.
        private bool Nomigrate => _metrics is { } m ? m.Nomigrate : PlatformFlag("nomigrate");

        private bool NestedVirt => _metrics is { } m ? m.NestedVirt : PlatformFlag("nested-virt");

        private bool PlatformFlag(string key) =>
            _vm.Platform.TryGetValue(key, out var value) && value is string text && text.ToLowerInvariant() is "true" or "1";

        private XenApiException? ControlDomainRefusal(VmOperations op)
        {
            if (op is VmOperations.ChangingVCPUs or VmOperations.Destroy && _isDomainZero)
            {
                return XenApiErrors.OperationNotAllowed("This operation is not allowed on dom0");
            }
            if (_vm.IsControlDomain && op is not (VmOperations.DataSourceOp or VmOperations.ChangingMemoryLive or VmOperations.AwaitingMemoryLive
                    or VmOperations.MetadataExport or VmOperations.ChangingDynamicRange or VmOperations.ChangingMemoryLimits
                    or VmOperations.ChangingStaticRange or VmOperations.Start or VmOperations.StartOn or VmOperations.ChangingVCPUs
                    or VmOperations.Destroy))
            {
                return XenApiErrors.OperationNotAllowed("This operation is not allowed on a control domain");
            }
            return null;
        }

        // Guests that do not say what they support: a PV domain, or PV drivers reporting a
        // version, support everything; an HVM guest must advertise each feature.
        private XenApiException? FeatureRefusal(VmOperations op, bool strict)
        {
            var implicitSupport = !IsLive
                || _metrics?.CurrentDomainType is DomainType.Pv or DomainType.Pvh or DomainType.PvInPvh
                || HasPvDrivers(_guest);
            if (op is VmOperations.Suspend or VmOperations.Checkpoint or VmOperations.PoolMigrate or VmOperations.MigrateSend && IsLive)
            {
                if (GuestValue("data-cant-suspend-reason") is { } reason)
                {
                    return XenApiErrors.VmNonSuspendable(_ref, reason);
                }
                return !implicitSupport && strict && !HasFeature("feature-suspend") ? XenApiErrors.VmLacksFeature(_ref) : null;
            }
            if (implicitSupport)
            {
                return null;
            }
            var lacks = op switch
            {
                VmOperations.CleanShutdown => strict && !HasFeature("feature-shutdown") && !HasFeature("feature-poweroff"),
                VmOperations.CleanReboot => strict && !HasFeature("feature-shutdown") && !HasFeature("feature-reboot"),
                VmOperations.ChangingVCPUsLive => !HasFeature("feature-vcpu-hotplug"),
                _ => false,
            };
            return lacks ? XenApiErrors.VmLacksFeature(_ref) : null;
        }

        private string? GuestValue(string key) => _guest is { } g && g.Other.TryGetValue(key, out var value) ? (string?)value : null;

        private bool HasFeature(string key) => GuestValue(key) == "1";

        private XenApiException? OnBootRefusal(VmOperations op)
        {
            var checksReset = op is VmOperations.Checkpoint or VmOperations.Snapshot or VmOperations.Suspend or VmOperations.SnapshotWithQuiesce;
            if (!checksReset && op != VmOperations.PoolMigrate)
            {
                return null;
            }
            foreach (var vbd in _vm.VBDs)
            {
                if (!_db.TryGet(vbd, out var drive) || !_db.TryGet(drive.VDI, out var vdi))
                {
                    continue;
                }
                var reset = vdi.SmConfig.TryGetValue("on_boot", out var onBoot) && (string?)onBoot == "reset";
                if (reset && (checksReset || IsTrue(vdi.SmConfig, "caching")))
                {
                    return XenApiErrors.VdiOnBootModeIncompatibleWithOperation();
                }
            }
            return null;
        }

        private XenApiException? OtherDeviceRefusal(VmOperations op)
        {
            var moves = op is VmOperations.Suspend or VmOperations.Checkpoint or VmOperations.PoolMigrate or VmOperations.MigrateSend;
            var vgpus = _vm.VGPUs.Select(v => _db.TryGet(v, out var vgpu) ? vgpu : (VGPURecord?)null).OfType<VGPURecord>().ToList();
            if (moves)
            {
                var sriovPcis = vgpus.Where(v => Implementation(v) == VgpuTypeImplementation.NvidiaSriov).Select(v => v.PCI).ToHashSet();
                if (_vm.AttachedPCIs.Any(pci => !sriovPcis.Contains(pci)))
                {
                    return XenApiErrors.VmHasPciAttached(_ref);
                }
            }
            if (_vm.VGPUs.Count > 0 && moves)
            {
                var suspendable = vgpus.All(IsSuspendable);
                var fine = op switch
                {
                    VmOperations.MigrateSend when _vm.PowerState == VmPowerState.Halted => true,
                    VmOperations.Checkpoint when _vm.PowerState == VmPowerState.Suspended => true,
                    _ => suspendable,
                };
                if (!fine)
                {
                    return XenApiErrors.VmHasVgpu(_ref);
                }
            }
            if ((moves || op == VmOperations.Snapshot) && _vm.VUSBs.Count > 0)
            {
                return XenApiErrors.VmHasVusbs(_ref);
            }
            return null;
        }

        private VgpuTypeImplementation? Implementation(VGPURecord vgpu) => _db.TryGet(vgpu.Type, out var type) ? type.Implementation : null;

        // Only NVIDIA vGPUs whose card reports compatibility data can be suspended or migrated (xapi_vm_lifecycle.ml check_vgpu).
        private bool IsSuspendable(VGPURecord vgpu) =>
            Implementation(vgpu) is VgpuTypeImplementation.Nvidia or VgpuTypeImplementation.NvidiaSriov
            && _db.TryGet(vgpu.ResidentOn, out var pgpu) && pgpu.CompatibilityMetadata.ContainsKey("nvidia");

        private XenApiException? MembershipRefusal(VmOperations op)
        {
            if (op == VmOperations.MakeIntoTemplate)
            {
                if (_db.TryGet(_vm.Appliance, out _))
                {
                    return XenApiErrors.VmIsPartOfAnAppliance(_ref, _vm.Appliance.Value);
                }
                if (_db.TryGet(_vm.ProtectionPolicy, out _))
                {
                    return XenApiErrors.VmAssignedToProtectionPolicy(_ref, _vm.ProtectionPolicy.Value);
                }
                if (_db.TryGet(_vm.SnapshotSchedule, out _))
                {
                    return XenApiErrors.VmAssignedToSnapshotSchedule(_ref, _vm.SnapshotSchedule.Value);
                }
            }
            if (op == VmOperations.QueryServices && !IsTrue(_vm.OtherConfig, "is_system_domain"))
            {
                return XenApiErrors.NotSystemDomain(_ref);
            }
            // A rolling pool upgrade (NOT_SUPPORTED_DURING_UPGRADE) never happens here: a pool runs one version.
            if (op == VmOperations.CreateVtpm && _vm.VTPMs.Count > 0)
            {
                return XenApiErrors.VtpmMaxAmountReached(_vm.VTPMs.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            return null;
        }
    }

    /// <summary>Whether the guest agent reports a PV driver version (integer <c>major</c> and <c>minor</c>), which real hosts take as full support.</summary>
    internal static bool HasPvDrivers(VMGuestMetricsRecord? guest) =>
        guest is { } g
        && g.PVDriversVersion.TryGetValue("major", out var major) && int.TryParse((string?)major, out _)
        && g.PVDriversVersion.TryGetValue("minor", out var minor) && int.TryParse((string?)minor, out _);
}
