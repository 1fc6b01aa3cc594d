using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Xapi.Xenops;
using Xapi.Xenops.Memory;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>How a domain boots: a PV/PVH kernel (direct boot) or nothing (HVM's firmware).</summary>
public sealed record XenBoot(string? Kernel = null, string? Ramdisk = null, string? Cmdline = null)
{
    public static XenBoot Firmware { get; } = new();

    /// <summary>The config's direct kernel boot, or <see cref="Firmware"/> when it names no kernel.</summary>
    public static XenBoot Of(DomainConfig config) =>
        config.Kernel is { Length: > 0 } kernel ? new XenBoot(kernel, config.Ramdisk, config.KernelArgs) : Firmware;
}

/// <summary>
/// A disk as libxl attaches it: the file or device, its format (<c>raw</c>, <c>qcow2</c>, <c>vhd</c>),
/// the backend serving it (<c>phy</c>: blkback over a loop device; <c>qdisk</c>: qemu) and the
/// guest's name for it (<c>xvda</c>, <c>hda</c>); without one, the VBD's device key is passed as it is.
/// </summary>
public sealed record XenDisk(string Target, string Format, string Backend, string? GuestDevice = null)
{
    /// <summary>libxl's backend for blkback over a file or block device.</summary>
    public const string BlkbackBackend = "phy";

    /// <summary>libxl's backend for qemu serving the image in dom0 (qcow2 chains, vhd).</summary>
    public const string QdiskBackend = "qdisk";

    /// <summary>
    /// Raw images go to blkback, the kernel's own backend; every other format needs qemu, which
    /// follows qcow2 backing chains and reads vhd.
    /// </summary>
    public static string BackendFor(string format) =>
        format.Equals("raw", StringComparison.OrdinalIgnoreCase) ? BlkbackBackend : QdiskBackend;

    /// <summary>libxl's format of a drive without media.</summary>
    public const string EmptyFormat = "empty";

    /// <summary>
    /// An HVM guest's emulated CD drive with no disc in it: qemu creates the drive at boot, so
    /// media can be inserted later (libxl changes media only in drives qemu has).
    /// </summary>
    public static XenDisk EmptyDrive(string guestDevice) => new("", EmptyFormat, QdiskBackend, guestDevice);

    [JsonIgnore]
    public bool IsEmpty => Format == EmptyFormat;

    /// <summary>
    /// The id libxl gives qemu's emulated IDE drive: "ide-" and the Xen device number of hda..hdd
    /// (majors 3 and 22, the second disk of each at minor 64).
    /// </summary>
    public static string EmulatedDriveId(string guestDevice) => guestDevice switch
    {
        "hda" => "ide-768",
        "hdb" => "ide-832",
        "hdc" => "ide-5632",
        "hdd" => "ide-5696",
        _ => throw new ArgumentException($"{guestDevice} is not an emulated IDE drive (hda..hdd)", nameof(guestDevice)),
    };
}

/// <summary>
/// A seam <see cref="DomainConfig"/> as libxl's JSON domain config, the form <c>xl create -n</c>
/// prints and <c>libxl_domain_config_from_json</c> reads: keys left out take libxl's defaults.
/// </summary>
public static class LibxlDomainJson
{
    public static string Build(DomainConfig config, XenBoot boot, Func<VbdConfig, XenDisk?> diskOf)
    {
        var type = config.Type switch
        {
            DomainType.Hvm => "hvm",
            DomainType.Pv => "pv",
            _ => "pvh",
        };
        var buildInfo = new JsonObject
        {
            ["max_vcpus"] = config.VcpusMax,
            // A libxl_bitmap in JSON is the list of its set bits: vCPUs 0..n-1 online at boot.
            ["avail_vcpus"] = new JsonArray([.. Enumerable.Range(0, config.VcpusAtStartup).Select(i => JsonValue.Create(i))]),
            ["max_memkb"] = MemoryModel.KibOfBytesUsed(config.Memory.StaticMax),
            ["target_memkb"] = MemoryModel.KibOfBytesUsed(MemoryModel.StartTargetBytes(config.Type, config.Memory)),
        };
        if (boot.Kernel is not null)
        {
            buildInfo["kernel"] = boot.Kernel;
        }
        if (boot.Ramdisk is not null)
        {
            buildInfo["ramdisk"] = boot.Ramdisk;
        }
        if (boot.Cmdline is not null)
        {
            buildInfo["cmdline"] = boot.Cmdline;
        }
        // The keyed union's member for the type (libxl reads "type.pv" etc. by c_info.type).
        var typeInfo = new JsonObject();
        if (config.Type == DomainType.PvInPvh)
        {
            typeInfo["pvshim"] = "True";
        }
        if (config.BootOrder is not null)
        {
            typeInfo["boot"] = config.BootOrder;
        }
        if (config.Serial is not null)
        {
            typeInfo["serial"] = config.Serial;
        }
        buildInfo["type." + type] = typeInfo;

        var disks = new JsonArray();
        foreach (var vbd in config.Vbds)
        {
            var disk = diskOf(vbd);
            if (disk is null && vbd.Disk is not null)
            {
                throw new InvalidDomainRequestException(config.Uuid, $"VBD {vbd.Device}: disk {vbd.Disk.Id} is nothing libxl can attach");
            }
            // An empty drive is left out unless it is an emulated one (HVM) that media can go into.
            if (disk is not null)
            {
                disks.Add(DiskEntry(vbd, disk));
            }
        }

        var nics = new JsonArray();
        foreach (var vif in config.Vifs)
        {
            nics.Add(NicEntry(vif));
        }

        var root = new JsonObject
        {
            ["c_info"] = new JsonObject
            {
                ["type"] = type,
                ["name"] = config.Name,
                ["uuid"] = config.Uuid.ToString("D", CultureInfo.InvariantCulture),
                // This process runs the hotplug scripts during create/destroy (no udev path in 4.17).
                ["run_hotplug_scripts"] = "True",
            },
            ["b_info"] = buildInfo,
            ["disks"] = disks,
            ["nics"] = nics,
        };
        return root.ToJsonString();
    }

    /// <summary>A disk as libxl's JSON describes it: an entry of the config's "disks", or a hot-plugged disk.</summary>
    public static JsonObject DiskEntry(VbdConfig vbd, XenDisk disk)
    {
        var entry = new JsonObject
        {
            ["vdev"] = disk.GuestDevice ?? vbd.Device,
            ["backend"] = disk.Backend,
            ["format"] = disk.Format,
            ["readwrite"] = vbd.Mode == VbdMode.ReadWrite ? 1 : 0,
        };
        if (!disk.IsEmpty)
        {
            entry["pdev_path"] = disk.Target;
        }
        if (vbd.Kind == VbdKind.CdRom)
        {
            entry["is_cdrom"] = 1;
            entry["removable"] = 1;
        }
        return entry;
    }

    /// <summary>A network interface as libxl's JSON describes it.</summary>
    public static JsonObject NicEntry(VifConfig vif) => new()
    {
        ["devid"] = vif.Device,
        ["mac"] = vif.Mac,
        ["bridge"] = vif.Bridge,
        ["mtu"] = vif.Mtu,
    };

    /// <summary>The default disk mapping: a binding whose id is an absolute path is that file, qcow2 through qemu, anything else raw through blkback.</summary>
    public static XenDisk? DiskAtPath(VbdConfig vbd) =>
        vbd.Disk is { Id: var path } && Path.IsPathRooted(path)
            ? path.EndsWith(".qcow2", StringComparison.OrdinalIgnoreCase) ? new XenDisk(path, "qcow2", XenDisk.QdiskBackend) : new XenDisk(path, "raw", XenDisk.BlkbackBackend)
            : null;
}
