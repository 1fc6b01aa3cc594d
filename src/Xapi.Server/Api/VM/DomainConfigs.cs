using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Xenops;
using Xapi.Xenops.Memory;
using ModelDomainType = Xapi.Model.DomainType;
using SeamDomainType = Xapi.Xenops.DomainType;
using SeamVbdMode = Xapi.Xenops.VbdMode;

namespace Xapi.Server.Api;

/// <summary>
/// What a VM's records say a domain is, in the seam's terms (xapi_xenops.ml's MD.of_vm): the
/// backend gets a config and never reads the database.
/// </summary>
internal static class DomainConfigs
{
    public static DomainConfig Of(IRowReader db, VMRecord vm)
    {
        var hvm = vm.DomainType == ModelDomainType.Hvm;
        var memory = MemoryOf(vm);
        return new DomainConfig
        {
            Uuid = Guid.Parse(vm.Uuid),
            Name = vm.NameLabel,
            Type = Seam(vm.DomainType),
            Memory = memory,
            VcpusMax = (int)vm.VCPUsMax,
            VcpusAtStartup = (int)vm.VCPUsAtStartup,
            ShadowMultiplier = vm.HVMShadowMultiplier,
            Vbds = vm.VBDs.Where(db.Exists).Select(db.Get)
                // Only HVM guests have emulated drives that can be empty (xapi_xenops.ml).
                .Where(vbd => !vbd.Empty || hvm)
                .Select(vbd => new VbdConfig(
                    DeviceKey(vbd),
                    vbd.Type switch { VbdType.CD => VbdKind.CdRom, VbdType.Floppy => VbdKind.Floppy, _ => VbdKind.Disk },
                    vbd.Mode == Xapi.Model.VbdMode.RW ? SeamVbdMode.ReadWrite : SeamVbdMode.ReadOnly,
                    vbd.Empty || vbd.VDI.IsNull || !db.Exists(vbd.VDI) ? null : new DiskBinding(db.Get(vbd.VDI).Uuid)))
                .ToList(),
            Vifs = vm.VIFs.Where(db.Exists).Select(db.Get)
                .Where(vif => int.TryParse(vif.Device, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                .Select(vif => new VifConfig(
                    int.Parse(vif.Device, NumberStyles.None, CultureInfo.InvariantCulture),
                    vif.MAC,
                    db.Exists(vif.Network) ? db.Get(vif.Network).Bridge : "",
                    (int)(vif.MTU > 0 ? vif.MTU : 1500)))
                .ToList(),
            // Direct kernel boot, for PV and PVH guests only (xapi_xenops.ml builder_spec_info: Direct when PV_bootloader is empty).
            Kernel = !hvm && vm.PVBootloader.Length == 0 && vm.PVKernel.Length > 0 ? vm.PVKernel : null,
            Ramdisk = !hvm && vm.PVBootloader.Length == 0 && vm.PVKernel.Length > 0 && vm.PVRamdisk.Length > 0 ? vm.PVRamdisk : null,
            KernelArgs = !hvm && vm.PVBootloader.Length == 0 && vm.PVKernel.Length > 0 ? KernelArgsOf(vm) : null,
            BootOrder = hvm ? BootOrderOf(vm) : null,
            Serial = hvm ? SerialOf(vm) : null,
            Platform = vm.Platform.Where(p => p.Value is string).ToDictionary(p => (string)p.Key, p => (string)p.Value!, StringComparer.Ordinal),
        };
    }

    /// <summary>The firmware's boot order: HVM_boot_params:order, or the real hosts' default when it is missing or empty (qemu would not start).</summary>
    private static string BootOrderOf(VMRecord vm) =>
        vm.HVMBootParams.TryGetValue(HvmBootOrderKey, out var order) && order is string { Length: > 0 } given ? given : DefaultHvmBootOrder;

    /// <summary>The serial port as real hosts choose it: platform:hvm_serial over other_config:hvm_serial, else a pty.</summary>
    private static string SerialOf(VMRecord vm) =>
        vm.Platform.TryGetValue(HvmSerialKey, out var platform) && platform is string fromPlatform ? fromPlatform
        : vm.OtherConfig.TryGetValue(HvmSerialKey, out var other) && other is string fromOtherConfig ? fromOtherConfig
        : DefaultHvmSerial;

    private const string HvmBootOrderKey = "order";
    private const string DefaultHvmBootOrder = "cd";
    private const string HvmSerialKey = "hvm_serial";
    private const string DefaultHvmSerial = "pty";

    /// <summary>The command line as real hosts build it: PV_legacy_args, then PV_args, space-separated.</summary>
    private static string KernelArgsOf(VMRecord vm) => string.Join(' ', new[] { vm.PVLegacyArgs, vm.PVArgs }.Where(a => a.Length > 0));

    /// <summary>
    /// The VM's memory bounds, put in order the way real hosts coerce them: the dynamic range is
    /// clamped into the static one (only static_max &lt; static_min and dynamic_max &lt; dynamic_min are refused).
    /// </summary>
    public static MemoryRange MemoryOf(VMRecord vm)
    {
        var staticMin = vm.MemoryStaticMin;
        var staticMax = vm.MemoryStaticMax;
        var dynamicMax = Math.Clamp(vm.MemoryDynamicMax, staticMin, Math.Max(staticMin, staticMax));
        var dynamicMin = Math.Clamp(vm.MemoryDynamicMin, staticMin, dynamicMax);
        return new MemoryRange(staticMin, dynamicMin, dynamicMax, staticMax);
    }

    /// <summary>What last_booted_record keeps of a domain: the config it ran with, as JSON.</summary>
    public static string Describe(DomainConfig config) => System.Text.Json.JsonSerializer.Serialize(config);

    /// <summary>How the seam names a VBD: its userdevice, which stays put while the Linux name is derived from it.</summary>
    public static string DeviceKey(VBDRecord vbd) => vbd.Userdevice;

    public static SeamDomainType Seam(ModelDomainType type) => type switch
    {
        ModelDomainType.Pv => SeamDomainType.Pv,
        ModelDomainType.Pvh => SeamDomainType.Pvh,
        ModelDomainType.PvInPvh => SeamDomainType.PvInPvh,
        _ => SeamDomainType.Hvm,
    };

    public static ModelDomainType Model(SeamDomainType type) => type switch
    {
        SeamDomainType.Pv => ModelDomainType.Pv,
        SeamDomainType.Pvh => ModelDomainType.Pvh,
        SeamDomainType.PvInPvh => ModelDomainType.PvInPvh,
        _ => ModelDomainType.Hvm,
    };
}
