using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Model;
using Xapi.Storage.Drivers.Lvm;

namespace Xapi.Storage.Tests.Lvm;

/// <summary>
/// The lvm driver's decisions on canned LVM answers (this host has no device-mapper; the real
/// runs are in <see cref="LvmGuestTests"/>): the commands it builds, what it refuses before
/// running anything, how it reads lvs/vgs/pvs JSON.
/// </summary>
public class LvmDriverTests
{
    private const long MiB = 1 << 20;
    private const string SrUuid = "0f6c7a5e-1d2b-4c3d-8e9f-001122334455";
    private const string VdiA = "11111111-2222-4333-8444-555555555555";
    private const string VdiS = "66666666-7777-4888-9999-aaaaaaaaaaaa";
    private const string Vg = "VG_XenStorage-" + SrUuid;
    private const string Device = "/dev/sdb";

    /// <summary>Answers LVM commands from a table keyed on the command name; records every run.</summary>
    private sealed class FakeLvm : ILvmRunner
    {
        public List<IReadOnlyList<string>> Runs { get; } = [];

        public Dictionary<string, Func<IReadOnlyList<string>, LvmResult>> Answers { get; } = [];

        public Task<LvmResult> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
        {
            Runs.Add(arguments);
            return Task.FromResult(Answers.TryGetValue(arguments[0], out var answer) ? answer(arguments) : new LvmResult(0, "", ""));
        }

        public bool Ran(string command) => Runs.Any(r => r[0] == command);
    }

    private static string VgsJson(long size, long free) =>
        $$"""{"report":[{"vg":[{"vg_name":"{{Vg}}", "vg_size":"{{size}}", "vg_free":"{{free}}", "vg_extent_size":"{{4 * MiB}}"}]}]}""";

    private static string LvsJson(params (string Name, long Size, string Attr, string Origin)[] lvs) =>
        """{"report":[{"lv":[""" + string.Join(",", lvs.Select(l => $$"""{"lv_name":"{{l.Name}}", "lv_size":"{{l.Size}}", "lv_attr":"{{l.Attr}}", "origin":"{{l.Origin}}"}""")) + "]}]}";

    private static (LvmDriver Driver, FakeLvm Lvm) Driver(long vgSize = 100 * MiB, long vgFree = 100 * MiB, string? lvs = null, bool busy = false)
    {
        var lvm = new FakeLvm();
        lvm.Answers["vgs"] = _ => new LvmResult(0, VgsJson(vgSize, vgFree), "");
        lvm.Answers["lvs"] = _ => new LvmResult(0, lvs ?? LvsJson(), "");
        lvm.Answers["pvs"] = _ => new LvmResult(5, """{"report":[{"pv":[]}]}""", $"Failed to find physical volume \"{Device}\".");
        return (new LvmDriver(lvm, d => d ?? throw new SmException(SmErrors.ConfigDeviceMissing, "missing"), _ => busy), lvm);
    }

    private static SrContext Sr() =>
        new(SrUuid, new Dictionary<string, string> { [LvmDriver.DeviceKey] = Device }, new Dictionary<string, string>(), "/tmp", NullLogger.Instance);

    private static VdiInfo Ref(string uuid) => new() { Uuid = uuid, Location = uuid };

    private static async Task<T> Throws<T>(Func<Task> action)
        where T : Exception
    {
        try
        {
            await action();
        }
        catch (T e)
        {
            return e;
        }
        Assert.Fail($"expected {typeof(T).Name}");
        throw new InvalidOperationException();
    }

    private static VdiSpec Spec(string uuid, long size) => new(uuid, size, "disk", VdiType.User, false, new Dictionary<string, string>());

    [Test]
    public void Commands_are_argument_lists_with_the_vg_and_lv_names_of_sm()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LvmCommands.LvRemove(Vg, "LV-" + VdiA), Is.EqualTo(new[] { "lvremove", "-f", $"{Vg}/LV-{VdiA}" }));
            Assert.That(LvmCommands.LvCreate(Vg, LvmCommands.LvName(VdiA), 8 * MiB),
                Is.EqualTo(new[] { "lvcreate", "-W", "y", "--yes", "-L", "8388608b", "-n", "LV-" + VdiA, Vg }));
            Assert.That(LvmCommands.LvSnapshot(Vg, "LV-" + VdiA, "LV-" + VdiS, 12 * MiB, writable: false),
                Is.EqualTo(new[] { "lvcreate", "-y", "-s", "-p", "r", "-L", "12582912b", "-n", "LV-" + VdiS, $"{Vg}/LV-{VdiA}" }));
            Assert.That(LvmCommands.VgName(SrUuid), Is.EqualTo(Vg));
            Assert.That(LvmCommands.DevicePath(SrUuid, VdiA), Is.EqualTo($"/dev/{Vg}/LV-{VdiA}"));
        });
    }

    [TestCase("../../etc")]
    [TestCase("11111111-2222-4333-8444-555555555555/../x")]
    [TestCase("11111111-2222-4333-8444-55555555555A")]
    [TestCase("")]
    public void Names_that_are_not_canonical_uuids_never_reach_an_lvm_command(string uuid)
    {
        var error = Assert.Throws<SmException>(() => LvmCommands.LvName(uuid));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.InvalidArg));
        Assert.That(Assert.Throws<SmException>(() => LvmCommands.VgName(uuid))!.Code, Is.EqualTo(SmErrors.InvalidArg));
    }

    [Test]
    public void Lvs_json_gives_snapshots_their_origin_and_sizes_in_bytes()
    {
        var json = """
              {
                  "report": [
                      {
                          "lv": [
                              {"lv_name":"LV-a", "lv_size":"8388608", "lv_attr":"owi-a-s---", "origin":""},
                              {"lv_name":"LV-s", "lv_size":"12582912B", "lv_attr":"sri-a-s---", "origin":"LV-a"}
                          ]
                      }
                  ]
              }
            """;
        var lvs = LvmReportParser.Lvs(json);
        Assert.That(lvs, Is.EqualTo(new[] { new LvReport("LV-a", 8 * MiB, "owi-a-s---", ""), new LvReport("LV-s", 12 * MiB, "sri-a-s---", "LV-a") }));
        Assert.That(lvs.Select(l => (l.IsSnapshot, l.IsReadOnly, l.IsActive)), Is.EqualTo(new[] { (false, false, true), (true, true, true) }));
    }

    [Test]
    public void Vgs_and_pvs_json_are_read_and_garbage_is_an_sr_scan_error()
    {
        Assert.That(LvmReportParser.Vgs(VgsJson(120 * MiB, 40 * MiB)), Is.EqualTo(new[] { new VgReport(Vg, 120 * MiB, 40 * MiB, 4 * MiB) }));
        Assert.That(LvmReportParser.Pvs("""{"report":[{"pv":[{"pv_name":"/dev/sdb", "vg_name":"", "vg_size":""}]}]}"""), Is.EqualTo(new[] { new PvReport("/dev/sdb", "", 0) }));
        Assert.That(Assert.Throws<SmException>(() => LvmReportParser.Lvs("not json"))!.Code, Is.EqualTo(SmErrors.SrScan));
        Assert.That(Assert.Throws<SmException>(() => LvmReportParser.Lvs("""{"report":[{"lv":[{"lv_name":"x", "lv_size":"12.5m", "lv_attr":"", "origin":""}]}]}"""))!.Code, Is.EqualTo(SmErrors.SrScan));
    }

    [Test]
    public async Task A_vdi_is_rounded_up_to_whole_extents()
    {
        var (driver, lvm) = Driver();
        lvm.Answers["lvcreate"] = _ =>
        {
            lvm.Answers["lvs"] = _ => new LvmResult(0, LvsJson(("LV-" + VdiA, 8 * MiB, "-wi-a-----", "")), "");
            return new LvmResult(0, "", "");
        };
        var vdi = await driver.CreateVdiAsync(Sr(), Spec(VdiA, 5 * MiB), CancellationToken.None);
        Assert.That(lvm.Runs.Single(r => r[0] == "lvcreate"), Does.Contain("8388608b"));
        Assert.That((vdi.VirtualSize, vdi.PhysicalUtilisation, vdi.SmConfig[LvmDriver.VdiTypeKey]), Is.EqualTo((8 * MiB, 8 * MiB, "aio")));
    }

    [Test]
    public async Task A_vdi_larger_than_the_free_space_is_refused_before_lvcreate_runs()
    {
        var (driver, lvm) = Driver(vgFree: 12 * MiB);
        var error = (await Throws<SrFullException>(async () => await driver.CreateVdiAsync(Sr(), Spec(VdiA, 13 * MiB), CancellationToken.None)));
        Assert.That((error!.Requested, error.Available), Is.EqualTo((16 * MiB, 12 * MiB)));
        Assert.That(lvm.Ran("lvcreate"), Is.False);
    }

    [Test]
    public async Task Lvcreate_running_out_of_space_is_reported_as_sr_full()
    {
        var (driver, lvm) = Driver(vgFree: 12 * MiB);
        lvm.Answers["lvcreate"] = _ => new LvmResult(5, "", $"Volume group \"{Vg}\" has insufficient free space (0 extents): 2 required.");
        var error = (await Throws<SrFullException>(async () => await driver.CreateVdiAsync(Sr(), Spec(VdiA, 8 * MiB), CancellationToken.None)));
        Assert.That(error!.Requested, Is.EqualTo(8 * MiB));
    }

    [Test]
    public async Task Shrinking_is_refused_and_growing_runs_lvextend_only_when_the_vg_has_room()
    {
        var (driver, lvm) = Driver(vgFree: 4 * MiB, lvs: LvsJson(("LV-" + VdiA, 8 * MiB, "-wi-a-----", "")));
        var shrink = (await Throws<SmException>(async () => await driver.ResizeVdiAsync(Sr(), Ref(VdiA), 4 * MiB, CancellationToken.None)));
        Assert.That((shrink!.Code, shrink.Detail), Is.EqualTo((SmErrors.VdiSize, "shrinking not allowed")));
        var full = (await Throws<SrFullException>(async () => await driver.ResizeVdiAsync(Sr(), Ref(VdiA), 16 * MiB, CancellationToken.None)));
        Assert.That((full!.Requested, full.Available), Is.EqualTo((8 * MiB, 4 * MiB)));
        Assert.That(lvm.Ran("lvextend"), Is.False);
    }

    [Test]
    public async Task An_origin_with_snapshots_is_neither_deleted_nor_resized_and_a_snapshot_is_not_snapshotted()
    {
        var (driver, lvm) = Driver(lvs: LvsJson(("LV-" + VdiA, 8 * MiB, "owi-a-s---", ""), ("LV-" + VdiS, 12 * MiB, "sri-a-s---", "LV-" + VdiA)));
        var delete = (await Throws<SmException>(async () => await driver.DeleteVdiAsync(Sr(), Ref(VdiA), CancellationToken.None)));
        Assert.That(delete!.Code, Is.EqualTo(SmErrors.VdiInUse));
        Assert.That(delete.Detail, Does.Contain("LV-" + VdiS));
        Assert.That((await Throws<SmException>(async () => await driver.ResizeVdiAsync(Sr(), Ref(VdiA), 16 * MiB, CancellationToken.None))).Code, Is.EqualTo(SmErrors.VdiResize));
        Assert.That((await Throws<SmException>(async () => await driver.SnapshotVdiAsync(Sr(), Ref(VdiS), Guid.NewGuid().ToString("D"), CancellationToken.None))).Code, Is.EqualTo(SmErrors.VdiSnapshot));
        Assert.That(lvm.Ran("lvremove") || lvm.Ran("lvextend") || lvm.Ran("lvcreate"), Is.False);
    }

    [Test]
    public async Task A_scanned_snapshot_is_read_only_with_its_origins_size_and_names_its_origin()
    {
        var (driver, _) = Driver(lvs: LvsJson(("LV-" + VdiA, 8 * MiB, "owi-a-s---", ""), ("LV-" + VdiS, 12 * MiB, "sri-a-s---", "LV-" + VdiA), ("swap", 4 * MiB, "-wi-a-----", "")));
        var scan = await driver.ScanAsync(Sr(), CancellationToken.None);
        var snapshot = scan.Vdis.Single(v => v.Uuid == VdiS);
        Assert.That(scan.Vdis.Select(v => v.Uuid), Is.EquivalentTo(new[] { VdiA, VdiS }));
        Assert.That((snapshot.ReadOnly, snapshot.VirtualSize, snapshot.PhysicalUtilisation, snapshot.SmConfig[LvmDriver.SnapshotOfKey]), Is.EqualTo((true, 8 * MiB, 12 * MiB, VdiA)));
        Assert.That(scan.Stat, Is.EqualTo(new SrStat(100 * MiB, 0)));
    }

    [Test]
    public void The_snapshot_store_holds_every_chunk_of_the_origin_and_its_exception_table()
    {
        Assert.That(LvmDriver.SnapshotCowSize(8 * MiB, 4 * MiB), Is.EqualTo(12 * MiB));
        Assert.That(LvmDriver.SnapshotCowSize(1024 * MiB, 4 * MiB), Is.EqualTo(1032 * MiB));
    }

    [Test]
    public async Task Sr_create_refuses_an_existing_vg_a_pv_of_another_vg_and_a_busy_device()
    {
        var (existing, lvm1) = Driver();
        Assert.That((await Throws<SmException>(async () => await existing.CreateAsync(Sr(), 0, CancellationToken.None))).Code, Is.EqualTo(SmErrors.SrExists));

        var (otherPv, lvm2) = Driver();
        lvm2.Answers["vgs"] = _ => new LvmResult(5, "", $"Volume group \"{Vg}\" not found");
        lvm2.Answers["pvs"] = _ => new LvmResult(0, """{"report":[{"pv":[{"pv_name":"/dev/sdb", "vg_name":"VG_other", "vg_size":"1000"}]}]}""", "");
        var inUse = (await Throws<SmException>(async () => await otherPv.CreateAsync(Sr(), 0, CancellationToken.None)));
        Assert.That((inUse!.Code, inUse.Detail), Is.EqualTo((SmErrors.SrInUse, "Device /dev/sdb in use, please check your existing SRs for an instance of this device (it is an LVM PV of VG VG_other)")));

        var (busy, lvm3) = Driver(busy: true);
        lvm3.Answers["vgs"] = _ => new LvmResult(5, "", $"Volume group \"{Vg}\" not found");
        Assert.That((await Throws<SmException>(async () => await busy.CreateAsync(Sr(), 0, CancellationToken.None))).Code, Is.EqualTo(SmErrors.SrInUse));
        Assert.That(new[] { lvm1, lvm2, lvm3 }.Any(l => l.Ran("pvcreate") || l.Ran("vgcreate")), Is.False);
    }

    [Test]
    public async Task Sr_create_makes_the_pv_and_vg_and_leaves_it_inactive()
    {
        var (driver, lvm) = Driver();
        lvm.Answers["vgs"] = _ => new LvmResult(5, "", $"Volume group \"{Vg}\" not found");
        await driver.CreateAsync(Sr(), 0, CancellationToken.None);
        Assert.That(lvm.Runs.Where(r => r[0] is "pvcreate" or "vgcreate" or "vgchange").Select(r => string.Join(' ', r)), Is.EqualTo(new[]
        {
            "pvcreate -ff -y --metadatasize 10M /dev/sdb",
            $"vgcreate --metadatasize 10M {Vg} /dev/sdb",
            $"vgchange -an {Vg}",
        }));
    }

    [Test]
    public async Task Sr_delete_refuses_while_any_lv_is_left()
    {
        var (driver, lvm) = Driver(lvs: LvsJson(("LV-" + VdiA, 8 * MiB, "-wi-a-----", "")));
        Assert.That((await Throws<SmException>(async () => await driver.DeleteAsync(Sr(), CancellationToken.None))).Code, Is.EqualTo(SmErrors.SrNotEmpty));
        Assert.That(lvm.Ran("vgremove"), Is.False);
    }

    [Test]
    public async Task Probe_lists_only_xenstorage_vgs_in_sms_xml()
    {
        var (driver, lvm) = Driver();
        lvm.Answers["pvs"] = _ => new LvmResult(0, $$"""{"report":[{"pv":[{"pv_name":"/dev/sdb", "vg_name":"{{Vg}}", "vg_size":"121634816"}, {"pv_name":"/dev/sdb", "vg_name":"VG_XenStorage-nope", "vg_size":"1"}]}]}""", "");
        var xml = await driver.ProbeAsync(new ProbeContext(new Dictionary<string, string> { [LvmDriver.DeviceKey] = Device }, new Dictionary<string, string>(), NullLogger.Instance), CancellationToken.None);
        Assert.That(xml, Is.EqualTo($"<?xml version=\"1.0\" ?>\n<SRlist>\n\t<SR>\n\t\t<UUID>{SrUuid}</UUID>\n\t\t<Devlist>/dev/sdb</Devlist>\n\t\t<size>121634816</size>\n\t</SR>\n</SRlist>\n"));
    }

    [TestCase(null, SmErrors.ConfigDeviceMissing)]
    [TestCase("", SmErrors.ConfigDeviceMissing)]
    [TestCase("sdb", SmErrors.InvalidArg)]
    [TestCase("/dev/../etc/passwd", SmErrors.InvalidArg)]
    [TestCase("/dev/./sdb", SmErrors.InvalidArg)]
    [TestCase("/dev//sdb", SmErrors.InvalidArg)]
    [TestCase("/dev/sdb/", SmErrors.InvalidArg)]
    [TestCase("/etc/passwd", SmErrors.InvalidArg)]
    [TestCase("/dev/", SmErrors.InvalidArg)]
    [TestCase("/dev/sdb,/dev/sdc", SmErrors.InvalidArg)]
    [TestCase("/dev/null", SmErrors.InvalidArg)]
    [TestCase("/dev/no-such-disk", SmErrors.ConfigDeviceMissing)]
    public void Device_config_must_name_an_existing_block_device_under_dev(string? device, int code)
    {
        var error = Assert.Throws<SmException>(() => BlockDevice.CheckClientDevice(device, LvmDriver.DeviceKey));
        Assert.That(error!.Code, Is.EqualTo(code), error.Message);
    }

    [Test]
    public void A_link_under_dev_to_a_file_outside_it_is_refused()
    {
        // /dev/fd is a link into /proc: under /dev by name, outside once followed.
        var error = Assert.Throws<SmException>(() => BlockDevice.CheckClientDevice("/dev/fd", LvmDriver.DeviceKey));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.InvalidArg));
    }

    [Test]
    public void A_real_block_device_passes_the_check()
    {
        var block = new DirectoryInfo("/dev").EnumerateFileSystemInfos().Select(f => f.FullName).FirstOrDefault(BlockDevice.IsBlockDevice);
        Assume.That(block, Is.Not.Null, "this machine shows no block device under /dev");
        Assert.That(BlockDevice.CheckClientDevice(block, LvmDriver.DeviceKey), Is.EqualTo(block));
    }

    [Test]
    public void The_sm_record_names_only_what_the_driver_does()
    {
        var description = new LvmDriver().Description;
        Assert.That((description.Type, description.NameLabel), Is.EqualTo(("lvm", "Local VHD on LVM")));
        Assert.That(description.Features.Select(f => f.Name), Does.Contain(SmFeatures.VdiSnapshot).And.Contain(SmFeatures.SrProbe).And.Not.Contain(SmFeatures.SrTrim).And.Not.Contain(SmFeatures.ThinProvisioning));
        Assert.That(description.Configuration.Select(c => c.Key), Is.EqualTo(new[] { LvmDriver.DeviceKey }));
    }
}
