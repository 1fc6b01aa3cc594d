using System.Text.Json;
using Xapi.LibXenCtrl.Interop;
using Xapi.Xenops;
using Xapi.Xenops.Memory;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>
/// The JSON handed to libxl_domain_config_from_json, against the shape `xl create -n` printed for
/// the PV, blkback and qdisk guests booted in a real dom0 (../shared/xen-qemu/README.md).
/// </summary>
public class LibxlDomainJsonTests
{
    private static readonly Guid Uuid = Guid.Parse("7d4d27a2-e628-11f1-9f36-e37019c57680");

    private static DomainConfig Pv(params VbdConfig[] vbds) => new()
    {
        Uuid = Uuid,
        Name = "tinypv",
        Type = DomainType.Pv,
        Memory = MemoryRange.Fixed(128L << 20),
        VcpusMax = 2,
        VcpusAtStartup = 1,
        Vbds = vbds,
        Vifs = [new VifConfig(0, "00:16:3e:00:00:02", "xenbr0")],
    };

    private static JsonElement Build(DomainConfig config, XenBoot? boot = null) =>
        JsonDocument.Parse(LibxlDomainJson.Build(config, boot ?? new XenBoot("/guest/vmlinuz", "/guest/initrd.gz", "console=hvc0 quiet"), LibxlDomainJson.DiskAtPath)).RootElement;

    [Test]
    public void The_default_boot_is_the_config_s_direct_kernel_boot_and_firmware_without_a_kernel()
    {
        var direct = Pv() with { Kernel = "/guest/vmlinuz", Ramdisk = "/guest/initrd.gz", KernelArgs = "console=hvc0 xtest=1" };
        var bInfo = JsonDocument.Parse(LibxlDomainJson.Build(direct, XenBoot.Of(direct), LibxlDomainJson.DiskAtPath)).RootElement.GetProperty("b_info");
        var firmware = JsonDocument.Parse(LibxlDomainJson.Build(Pv(), XenBoot.Of(Pv()), LibxlDomainJson.DiskAtPath)).RootElement.GetProperty("b_info");
        Assert.Multiple(() =>
        {
            Assert.That(bInfo.GetProperty("kernel").GetString(), Is.EqualTo("/guest/vmlinuz"));
            Assert.That(bInfo.GetProperty("ramdisk").GetString(), Is.EqualTo("/guest/initrd.gz"));
            Assert.That(bInfo.GetProperty("cmdline").GetString(), Is.EqualTo("console=hvc0 xtest=1"));
            Assert.That(firmware.TryGetProperty("kernel", out _), Is.False);
            Assert.That(XenBoot.Of(Pv() with { Kernel = "" }), Is.EqualTo(XenBoot.Firmware));
        });
    }

    [Test]
    public void A_PV_guest_has_the_create_info_and_build_info_xl_printed()
    {
        var json = Build(Pv());
        var cInfo = json.GetProperty("c_info");
        var bInfo = json.GetProperty("b_info");
        Assert.Multiple(() =>
        {
            Assert.That(cInfo.GetProperty("type").GetString(), Is.EqualTo("pv"));
            Assert.That(cInfo.GetProperty("name").GetString(), Is.EqualTo("tinypv"));
            Assert.That(cInfo.GetProperty("uuid").GetString(), Is.EqualTo("7d4d27a2-e628-11f1-9f36-e37019c57680"));
            Assert.That(cInfo.GetProperty("run_hotplug_scripts").GetString(), Is.EqualTo("True"));
            Assert.That(bInfo.GetProperty("max_vcpus").GetInt32(), Is.EqualTo(2));
            Assert.That(bInfo.GetProperty("avail_vcpus").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(new[] { 0 }));
            Assert.That(bInfo.GetProperty("max_memkb").GetInt64(), Is.EqualTo(131072));
            Assert.That(bInfo.GetProperty("target_memkb").GetInt64(), Is.EqualTo(131072));
            Assert.That(bInfo.GetProperty("kernel").GetString(), Is.EqualTo("/guest/vmlinuz"));
            Assert.That(bInfo.GetProperty("ramdisk").GetString(), Is.EqualTo("/guest/initrd.gz"));
            Assert.That(bInfo.GetProperty("cmdline").GetString(), Is.EqualTo("console=hvc0 quiet"));
            Assert.That(bInfo.TryGetProperty("type.pv", out _), Is.True);
        });
    }

    [Test]
    public void A_raw_file_goes_through_blkback_and_a_qcow2_through_qdisk_with_the_vif_on_its_bridge()
    {
        var json = Build(Pv(
            new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("/guest/disk.raw")),
            new VbdConfig("xvdb", VbdKind.Disk, VbdMode.ReadOnly, new DiskBinding("/guest/disk.qcow2")),
            new VbdConfig("xvdd", VbdKind.CdRom, VbdMode.ReadOnly, null)));
        var disks = json.GetProperty("disks").EnumerateArray().ToList();
        var nic = json.GetProperty("nics").EnumerateArray().Single();
        Assert.Multiple(() =>
        {
            Assert.That(disks, Has.Count.EqualTo(2), "the empty drive is left out");
            Assert.That(disks[0].GetProperty("pdev_path").GetString(), Is.EqualTo("/guest/disk.raw"));
            Assert.That(disks[0].GetProperty("vdev").GetString(), Is.EqualTo("xvda"));
            Assert.That(disks[0].GetProperty("backend").GetString(), Is.EqualTo("phy"));
            Assert.That(disks[0].GetProperty("format").GetString(), Is.EqualTo("raw"));
            Assert.That(disks[0].GetProperty("readwrite").GetInt32(), Is.EqualTo(1));
            Assert.That(disks[1].GetProperty("backend").GetString(), Is.EqualTo("qdisk"));
            Assert.That(disks[1].GetProperty("format").GetString(), Is.EqualTo("qcow2"));
            Assert.That(disks[1].GetProperty("readwrite").GetInt32(), Is.Zero);
            Assert.That(nic.GetProperty("mac").GetString(), Is.EqualTo("00:16:3e:00:00:02"));
            Assert.That(nic.GetProperty("bridge").GetString(), Is.EqualTo("xenbr0"));
            Assert.That(nic.GetProperty("devid").GetInt32(), Is.Zero);
        });
    }

    [Test]
    public void A_disk_the_storage_layer_attached_goes_by_its_guest_name_through_the_backend_its_format_needs()
    {
        // The seam keys VBDs by userdevice ("0"); libxl wants the guest's name for the disk.
        var config = Pv(
            new VbdConfig("0", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-a")),
            new VbdConfig("1", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-b")));
        var attached = new Dictionary<string, XenDisk>
        {
            ["vdi-a"] = new("/var/lib/sr/a.qcow2", "qcow2", XenDisk.BackendFor("qcow2"), "xvda"),
            ["vdi-b"] = new("/dev/vg/b", "raw", XenDisk.BackendFor("raw"), "xvdb"),
        };
        var json = JsonDocument.Parse(LibxlDomainJson.Build(config, XenBoot.Firmware, vbd => attached[vbd.Disk!.Id])).RootElement;
        var disks = json.GetProperty("disks").EnumerateArray().ToList();
        Assert.Multiple(() =>
        {
            Assert.That(disks.Select(d => d.GetProperty("vdev").GetString()), Is.EqualTo(new[] { "xvda", "xvdb" }));
            Assert.That(disks.Select(d => d.GetProperty("backend").GetString()), Is.EqualTo(new[] { "qdisk", "phy" }));
            Assert.That(disks.Select(d => d.GetProperty("pdev_path").GetString()), Is.EqualTo(new[] { "/var/lib/sr/a.qcow2", "/dev/vg/b" }));
        });
    }

    [TestCase("xenbr0", true)]
    [TestCase("xapi15", true)]
    [TestCase("a-bridge-of-16ch", false)]
    [TestCase("", false)]
    [TestCase("br/0", false)]
    [TestCase("br 0", false)]
    [TestCase("..", false)]
    public void A_bridge_is_made_only_under_a_name_Linux_accepts(string name, bool valid) =>
        Assert.That(LinuxBridges.IsValidName(name), Is.EqualTo(valid));

    [Test]
    public void A_ballooning_guest_starts_at_its_dynamic_minimum_with_room_up_to_its_static_maximum()
    {
        var config = Pv() with { Memory = new MemoryRange(256L << 20, 512L << 20, 768L << 20, 1024L << 20) };
        var bInfo = Build(config).GetProperty("b_info");
        Assert.That(bInfo.GetProperty("max_memkb").GetInt64(), Is.EqualTo(1024 * 1024));
        Assert.That(bInfo.GetProperty("target_memkb").GetInt64(), Is.EqualTo(512 * 1024), "what the start was charged for; nothing squeezes others yet");
    }

    [Test]
    public void A_disk_libxl_cannot_attach_is_refused_naming_the_VBD()
    {
        var config = Pv(new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-uuid")));
        var e = Assert.Throws<InvalidDomainRequestException>(() => LibxlDomainJson.Build(config, XenBoot.Firmware, LibxlDomainJson.DiskAtPath));
        Assert.That(e!.Message, Does.Contain("VBD xvda").And.Contain("vdi-uuid"));
    }

    [Test]
    public void A_PVH_guest_names_its_union_member_and_PV_in_PVH_asks_for_the_shim()
    {
        Assert.That(Build(Pv() with { Type = DomainType.Pvh }).GetProperty("b_info").TryGetProperty("type.pvh", out _), Is.True);
        var shim = Build(Pv() with { Type = DomainType.PvInPvh }).GetProperty("b_info").GetProperty("type.pvh");
        Assert.That(shim.GetProperty("pvshim").GetString(), Is.EqualTo("True"));
    }

    [Test]
    public void An_HVM_guest_boots_its_firmware_in_the_VM_s_order_with_its_serial_port_where_asked_and_an_empty_CD_drive()
    {
        var config = Pv(
            new VbdConfig("0", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-boot")),
            new VbdConfig("3", VbdKind.CdRom, VbdMode.ReadOnly, null)) with { Type = DomainType.Hvm, BootOrder = "dc", Serial = "file:/var/log/guest.log" };
        XenDisk? Attached(VbdConfig vbd) => vbd.Disk is null ? XenDisk.EmptyDrive("hdd") : new XenDisk("/var/lib/sr/boot.qcow2", "qcow2", XenDisk.QdiskBackend, "hda");
        var json = JsonDocument.Parse(LibxlDomainJson.Build(config, XenBoot.Of(config), Attached)).RootElement;
        var hvm = json.GetProperty("b_info").GetProperty("type.hvm");
        var drive = json.GetProperty("disks").EnumerateArray().Single(d => d.GetProperty("vdev").GetString() == "hdd");
        Assert.Multiple(() =>
        {
            Assert.That(json.GetProperty("c_info").GetProperty("type").GetString(), Is.EqualTo("hvm"));
            Assert.That(json.GetProperty("b_info").TryGetProperty("kernel", out _), Is.False, "an HVM guest boots its firmware");
            Assert.That(hvm.GetProperty("boot").GetString(), Is.EqualTo("dc"));
            Assert.That(hvm.GetProperty("serial").GetString(), Is.EqualTo("file:/var/log/guest.log"));
            Assert.That(drive.GetProperty("format").GetString(), Is.EqualTo("empty"));
            Assert.That(drive.TryGetProperty("pdev_path", out _), Is.False, "an empty drive has no image");
            Assert.That((drive.GetProperty("is_cdrom").GetInt32(), drive.GetProperty("removable").GetInt32(), drive.GetProperty("readwrite").GetInt32()), Is.EqualTo((1, 1, 0)));
        });
    }

    [Test]
    public void An_empty_drive_is_left_out_when_nothing_emulates_it()
    {
        var config = Pv(new VbdConfig("3", VbdKind.CdRom, VbdMode.ReadOnly, null));
        Assert.That(Build(config).GetProperty("disks").GetArrayLength(), Is.Zero);
    }
}
