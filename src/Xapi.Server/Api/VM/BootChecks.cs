using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Xenops;
using Xapi.Xenops.Memory;

namespace Xapi.Server.Api;

/// <summary>
/// Whether a VM can boot on a host (VM.assert_can_boot_here, and what start_on and resume_on run
/// first), in the real server's order (xapi_vm_helpers.ml): the VM's own parameters, the host being
/// live and enabled, the SRs and networks it needs, memory, and physical CPUs. The first refusal wins.
/// </summary>
internal static class BootChecks
{
    // Parameter texts exactly as real hosts send them (xapi_vm_helpers.ml validate_basic_parameters).
    private const string VcpusMaxParameter = "VCPUs_max";
    private const string VcpusAtStartupParameter = "VCPUs-at-startup";
    private const string VcpusAtStartupTooHigh = "value greater than VCPUs-max";
    private const string ShadowMultiplierParameter = "HVM_shadow_multiplier";
    private const string ActionsAfterCrashParameter = "VM.actions_after_crash";
    private const string RenameRestartRefused = "option would leak a domain; VMs and not domains are managed by this API";
    private const string CoredumpRefused = "cannot invoke a coredump of an HVM, PVH or PV-in-PVH domain";

    // Platform key that lets a VM have more vCPUs than the host has CPUs.
    private const string VcpuUnrestrictedKey = "vcpu-unrestricted";

    /// <summary>The first reason <paramref name="vm"/> cannot boot on <paramref name="host"/>, or null.</summary>
    public static XenApiException? Check(IRowReader db, VMRecord vm, HostRecord host, HostMemoryInfo memory)
    {
        if (BasicParameters(vm) is { } invalid)
        {
            return invalid;
        }
        if (db.Exists(host.Metrics) && !db.Get(host.Metrics).Live)
        {
            return XenApiErrors.HostNotLive();
        }
        if (!host.Enabled)
        {
            return XenApiErrors.HostDisabled(host.Ref.Value);
        }
        if (RequiredSrs(db, vm).Where(sr => !SrAttachedOn(db, sr, host.Ref)).Select(sr => (SRRef?)sr).FirstOrDefault() is { } missingSr)
        {
            return XenApiErrors.VmRequiresSr(vm.Ref.Value, missingSr.Value);
        }
        foreach (var vif in vm.VIFs.Where(db.Exists).Select(db.Get))
        {
            if (db.Exists(vif.Network) && !NetworkReachable(db, db.Get(vif.Network), host.Ref))
            {
                return XenApiErrors.VmRequiresNetwork(vm.Ref.Value, vif.Network.Value);
            }
        }
        var needed = NeededBytes(vm);
        var available = FreeBytes(db, host.Ref, memory);
        if (needed > available)
        {
            return XenApiErrors.HostNotEnoughFreeMemory(needed.ToString(CultureInfo.InvariantCulture), available.ToString(CultureInfo.InvariantCulture));
        }
        var pcpus = host.HostCPUs.Count(db.Exists);
        if (vm.VCPUsMax > pcpus && !Operations.VmAllowedOperations.IsTrue(vm.Platform, VcpuUnrestrictedKey))
        {
            return XenApiErrors.HostNotEnoughPcpus(vm.VCPUsMax.ToString(CultureInfo.InvariantCulture), pcpus.ToString(CultureInfo.InvariantCulture));
        }
        return null;
    }

    /// <summary>What starting the VM takes from the host: its footprint at dynamic_min (memory_check.ml).</summary>
    public static long NeededBytes(VMRecord vm) => MemoryModel.StartRequirementBytes(
        DomainConfigs.Seam(vm.DomainType), DomainConfigs.MemoryOf(vm), vm.VCPUsMax, vm.HVMShadowMultiplier);

    /// <summary>host.compute_free_memory: what the VMs resident on or scheduled to the host leave at most compression.</summary>
    public static long FreeBytes(IRowReader db, HostRef host, HostMemoryInfo memory) => MemoryModel.ComputeHostFreeMemory(
        memory.Total, memory.HostOverhead,
        db.All<VMRecord>()
            .Where(v => !v.IsControlDomain && (v.ResidentOn == host || v.ScheduledToBeResidentOn == host))
            .Select(v => new VmMemoryClaim(v.MemoryDynamicMin, v.MemoryOverhead)));

    private static XenApiException? BasicParameters(VMRecord vm)
    {
        var invariant = CultureInfo.InvariantCulture;
        if (vm.VCPUsMax < 1)
        {
            return XenApiErrors.InvalidValue(VcpusMaxParameter, vm.VCPUsMax.ToString(invariant));
        }
        if (vm.VCPUsAtStartup < 1)
        {
            return XenApiErrors.InvalidValue(VcpusAtStartupParameter, vm.VCPUsAtStartup.ToString(invariant));
        }
        if (vm.VCPUsAtStartup > vm.VCPUsMax)
        {
            return XenApiErrors.ValueNotSupported(VcpusAtStartupParameter, vm.VCPUsAtStartup.ToString(invariant), VcpusAtStartupTooHigh);
        }
        if (vm.MemoryStaticMax < vm.MemoryStaticMin || vm.MemoryDynamicMax < vm.MemoryDynamicMin)
        {
            // Declared with a constraint parameter; real hosts send none.
            return new XenApiException(ErrorCodes.MemoryConstraintViolation);
        }
        if (vm.HVMShadowMultiplier < 1)
        {
            return XenApiErrors.InvalidValue(ShadowMultiplierParameter, OcamlFloat.Format(vm.HVMShadowMultiplier));
        }
        if (vm.ActionsAfterCrash == OnCrashBehaviour.RenameRestart)
        {
            return XenApiErrors.ValueNotSupported(ActionsAfterCrashParameter, vm.ActionsAfterCrash.ToWire(), RenameRestartRefused);
        }
        if (vm.ActionsAfterCrash is OnCrashBehaviour.CoredumpAndDestroy or OnCrashBehaviour.CoredumpAndRestart && vm.DomainType != Xapi.Model.DomainType.Pv)
        {
            return XenApiErrors.ValueNotSupported(ActionsAfterCrashParameter, vm.ActionsAfterCrash.ToWire(), CoredumpRefused);
        }
        return null;
    }

    /// <summary>The SRs of the VM's disks (and of its suspend image while suspended), in device order.</summary>
    private static IEnumerable<SRRef> RequiredSrs(IRowReader db, VMRecord vm)
    {
        foreach (var vbd in vm.VBDs.Where(db.Exists).Select(db.Get))
        {
            if (!vbd.Empty && db.Exists(vbd.VDI))
            {
                yield return db.Get(vbd.VDI).SR;
            }
        }
        if (vm.PowerState == VmPowerState.Suspended && db.Exists(vm.SuspendVDI))
        {
            yield return db.Get(vm.SuspendVDI).SR;
        }
    }

    private static bool SrAttachedOn(IRowReader db, SRRef sr, HostRef host) =>
        db.Exists(sr) && db.Get(sr).PBDs.Where(db.Exists).Select(db.Get).Any(p => p.Host == host && p.CurrentlyAttached);

    /// <summary>A network with physical interfaces needs one on the host; one without (internal) is reachable from any.</summary>
    private static bool NetworkReachable(IRowReader db, NetworkRecord network, HostRef host)
    {
        var pifs = network.PIFs.Where(db.Exists).Select(db.Get).ToList();
        return pifs.Count == 0 || !network.Managed || pifs.Any(p => p.Host == host);
    }
}
