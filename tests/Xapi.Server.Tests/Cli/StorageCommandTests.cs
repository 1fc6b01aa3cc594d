using System.Globalization;
using Xapi.Cli.Commands;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>The storage commands run by the built xe, checked by what they print, how they exit and what the API then shows.</summary>
[TestFixture]
[CancelAfter(180_000)]
public sealed class StorageCommandTests : XeFixture
{
    private const long MiB = 1L << 20;

    private string _srUuid = "";
    private string _sr = "";

    [OneTimeSetUp]
    public async Task FindLocalSrAsync()
    {
        var pools = (IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!;
        _sr = (string)(await Client.InvokeAsync("pool.get_default_SR", pools[0]))!;
        _srUuid = (string)(await Client.InvokeAsync("SR.get_uuid", _sr))!;
    }

    private async Task<string> VdiByUuidAsync(string uuid) => (string)(await Client.InvokeAsync("VDI.get_by_uuid", uuid))!;

    private async Task<string> VdiFieldAsync(string uuid, string field) =>
        CliRecords.Render((await RecordAsync("VDI", await VdiByUuidAsync(uuid)))[field]);

    private async Task<string> NewVdiAsync(string name, string size = "4MiB") =>
        (await XeOkAsync("vdi-create", $"sr-uuid={_srUuid}", $"name-label={name}", $"virtual-size={size}")).Trim();

    private static string TempPath(string name) => Path.Combine(Path.GetTempPath(), $"xe-storage-{Guid.NewGuid():N}-{name}");

    [Test]
    public void The_commands_carry_real_xe_parameters_and_help()
    {
        var table = CliCommandTable.Standard.Commands;
        Assert.That(table["vdi-create"].Required, Is.EqualTo(new[] { "sr-uuid", "name-label", "virtual-size" }));
        Assert.That(table["vdi-create"].Optional, Is.EqualTo(new[] { "sm-config:", "sharable", "tags:", "type" }));
        Assert.That(table["vdi-import"].Help, Is.EqualTo("Import a raw VDI."));
        Assert.That(table["vbd-create"].Required, Is.EqualTo(new[] { "vm-uuid", "device" }));
        Assert.That(table["sr-create"].Optional, Does.Contain("device-config:"));
        Assert.That(table["pbd-unplug"].Help, Does.StartWith("Attempt to unplug the PBD from the host."));
    }

    [Test]
    public async Task Vdi_create_reads_a_size_suffix_and_prints_the_uuid_of_a_disk_with_what_was_asked()
    {
        var uuid = await NewVdiAsync("sized", "8 MiB");
        Assert.That(uuid, Does.Match("^[0-9a-f-]{36}$"));
        var record = await RecordAsync("VDI", await VdiByUuidAsync(uuid));
        Assert.That(record["name_label"], Is.EqualTo("sized"));
        Assert.That(record["virtual_size"], Is.EqualTo((8 * MiB).ToString(CultureInfo.InvariantCulture)));
        Assert.That(record["type"], Is.EqualTo("user"));

        var system = (await XeOkAsync("vdi-create", $"sr-uuid={_srUuid}", "name-label=sys", "virtual-size=4m", "type=system", "sharable=yes")).Trim();
        var sysRecord = await RecordAsync("VDI", await VdiByUuidAsync(system));
        Assert.That((sysRecord["type"], sysRecord["sharable"], sysRecord["virtual_size"]), Is.EqualTo(("system", true, (4 * MiB).ToString(CultureInfo.InvariantCulture))));
    }

    [Test]
    public async Task Vdi_create_refuses_a_size_it_cannot_read_and_an_unknown_type()
    {
        var size = await XeAsync("vdi-create", $"sr-uuid={_srUuid}", "name-label=bad", "virtual-size=lots");
        Assert.That((size.ExitCode, size.Stderr), Is.EqualTo((1, "Error: Failed to parse field 'virtual-size': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'lots'\n")));
        var type = await XeAsync("vdi-create", $"sr-uuid={_srUuid}", "name-label=bad", "virtual-size=1MiB", "type=scratch");
        Assert.That((type.ExitCode, type.Stderr), Is.EqualTo((1, "Error: Unknown vdi type: scratch\n")));
        var missing = await XeAsync("vdi-create", $"sr-uuid={_srUuid}", "name-label=bad");
        Assert.That(missing.ExitCode, Is.EqualTo(1));
        Assert.That(missing.Stderr, Does.Contain("Required parameter not found: virtual-size"));
        Assert.That((IReadOnlyList<object?>)(await Client.InvokeAsync("VDI.get_by_name_label", "bad"))!, Is.Empty);
    }

    [Test]
    public async Task Vdi_resize_clone_snapshot_and_copy_act_on_the_disk_and_print_new_uuids()
    {
        var uuid = await NewVdiAsync("origin");
        Assert.That(await XeOkAsync("vdi-resize", $"uuid={uuid}", "disk-size=16MiB"), Is.Empty);
        Assert.That(await VdiFieldAsync(uuid, "virtual_size"), Is.EqualTo((16 * MiB).ToString(CultureInfo.InvariantCulture)));

        var clone = (await XeOkAsync("vdi-clone", $"uuid={uuid}", "new-name-label=the clone")).Trim();
        Assert.That(await VdiFieldAsync(clone, "name_label"), Is.EqualTo("the clone"));

        var snapshot = (await XeOkAsync("vdi-snapshot", $"uuid={uuid}")).Trim();
        Assert.That(await VdiFieldAsync(snapshot, "is_a_snapshot"), Is.EqualTo("true"));
        Assert.That(await VdiFieldAsync(snapshot, "snapshot_of"), Is.EqualTo(await VdiByUuidAsync(uuid)));

        var copy = (await XeOkAsync("vdi-copy", $"uuid={uuid}", $"sr-uuid={_srUuid}")).Trim();
        Assert.That(copy, Is.Not.EqualTo(uuid));
        Assert.That(await VdiFieldAsync(copy, "SR"), Is.EqualTo(_sr));

        var neither = await XeAsync("vdi-copy", $"uuid={uuid}");
        Assert.That((neither.ExitCode, neither.Stderr), Is.EqualTo((1,
            "Error: Please specify one but not both of: a destination sr-uuid (I will create a fresh VDI); or a destination into-vdi-uuid (I will copy the blocks into this VDI)\n")));
    }

    [Test]
    public async Task Vdi_destroy_removes_the_disk_and_a_bad_uuid_fails_with_the_server_error()
    {
        var uuid = await NewVdiAsync("doomed");
        Assert.That(await XeOkAsync("vdi-destroy", $"uuid={uuid}"), Is.Empty);
        Assert.That((IReadOnlyList<object?>)(await Client.InvokeAsync("VDI.get_by_name_label", "doomed"))!, Is.Empty);

        var again = await XeAsync("vdi-destroy", $"uuid={uuid}");
        Assert.That(again.ExitCode, Is.EqualTo(1));
        Assert.That(again.Stdout, Is.Empty);
        Assert.That(again.Stderr, Does.Contain("UUID_INVALID").Or.Contain("The uuid you supplied was invalid."));
        Assert.That(again.Stderr, Does.Contain(uuid));
    }

    [Test]
    public async Task Vdi_import_then_export_gives_back_the_same_bytes()
    {
        var uuid = await NewVdiAsync("imported");
        var data = new byte[4 * MiB];
        new Random(7).NextBytes(data.AsSpan(0, (int)MiB));
        data.AsSpan((int)(3 * MiB), 4096).Fill(0x5a);
        var source = TempPath("in.raw");
        var target = TempPath("out.raw");
        await File.WriteAllBytesAsync(source, data);
        try
        {
            Assert.That(await XeOkAsync("vdi-import", $"uuid={uuid}", $"filename={source}", "format=raw"), Is.Empty);
            Assert.That(await XeOkAsync("vdi-export", $"uuid={uuid}", $"filename={target}"), Is.Empty);
            Assert.That(await File.ReadAllBytesAsync(target), Is.EqualTo(data));
            var tasks = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("task.get_all_records"))!;
            Assert.That(tasks.Values.Cast<IReadOnlyDictionary<string, object?>>().Select(t => t["name_label"]),
                Has.None.EqualTo("VDI import").And.None.EqualTo("VDI export"), "the command's tasks are gone");
        }
        finally
        {
            File.Delete(source);
            File.Delete(target);
        }
    }

    [Test]
    public async Task Vdi_import_of_a_missing_file_fails_on_the_client()
    {
        var uuid = await NewVdiAsync("never filled");
        var missing = TempPath("missing.raw");
        var result = await XeAsync("vdi-import", $"uuid={uuid}", $"filename={missing}");
        Assert.That((result.ExitCode, result.Stderr), Is.EqualTo((1, $"Operation failed. Error: file '{missing}' does not exist\n")));
    }

    [Test]
    public async Task Vdi_export_refuses_to_write_over_an_existing_file()
    {
        var uuid = await NewVdiAsync("exported");
        var existing = TempPath("existing.raw");
        await File.WriteAllTextAsync(existing, "keep me");
        try
        {
            var result = await XeAsync("vdi-export", $"uuid={uuid}", $"filename={existing}");
            Assert.That(result.ExitCode, Is.EqualTo(1));
            Assert.That(result.Stderr, Does.StartWith("Operation failed. Error: "));
            Assert.That(await File.ReadAllTextAsync(existing), Is.EqualTo("keep me"));
        }
        finally
        {
            File.Delete(existing);
        }
    }

    [Test]
    public async Task Vbd_create_attaches_a_disk_to_a_vm_as_asked_and_refuses_an_empty_disk()
    {
        var vm = await Client.CreateVmAsync("vbd host", withDevices: false);
        var vmUuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
        var vdi = await NewVdiAsync("for a vbd");

        var vbdUuid = (await XeOkAsync("vbd-create", $"vm-uuid={vmUuid}", $"vdi-uuid={vdi}", "device=1", "bootable=true", "mode=ro")).Trim();
        var vbd = await RecordAsync("VBD", (string)(await Client.InvokeAsync("VBD.get_by_uuid", vbdUuid))!);
        Assert.That((vbd["VM"], vbd["VDI"], vbd["userdevice"], vbd["bootable"], vbd["mode"], vbd["type"], vbd["empty"], vbd["currently_attached"]),
            Is.EqualTo((vm, await VdiByUuidAsync(vdi), "1", true, "RO", "Disk", false, false)));

        var cd = (await XeOkAsync("vbd-create", $"vm-uuid={vmUuid}", "device=3", "type=CD", "mode=RO")).Trim();
        Assert.That((await RecordAsync("VBD", (string)(await Client.InvokeAsync("VBD.get_by_uuid", cd))!))["empty"], Is.EqualTo(true));

        var empty = await XeAsync("vbd-create", $"vm-uuid={vmUuid}", "device=2");
        Assert.That((empty.ExitCode, empty.Stderr), Is.EqualTo((1, "Error: Empty VBDs can only be made for type=CD\n")));
        var mode = await XeAsync("vbd-create", $"vm-uuid={vmUuid}", $"vdi-uuid={vdi}", "device=2", "mode=wo");
        Assert.That((mode.ExitCode, mode.Stderr), Is.EqualTo((1, "Error: Unknown mode: wo (should be \"ro\" or \"rw\"\n")));
    }

    [Test]
    public async Task Vbd_insert_and_eject_change_the_disc_in_a_cd_drive_and_pass_the_servers_refusals()
    {
        var vm = await Client.CreateVmAsync("cd drive owner", withDevices: false);
        var vmUuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
        var vdi = await NewVdiAsync("a disc");
        var cdUuid = (await XeOkAsync("vbd-create", $"vm-uuid={vmUuid}", "device=3", "type=CD", "mode=RO")).Trim();
        var cd = (string)(await Client.InvokeAsync("VBD.get_by_uuid", cdUuid))!;

        var eject = await XeAsync("vbd-eject", $"uuid={cdUuid}");
        Assert.That((eject.ExitCode, eject.Stderr), Is.EqualTo((1, $"Operation could not be performed because the drive is empty\nvbd: {cdUuid}\n")), eject.ToString());
        Assert.That(await XeOkAsync("vbd-insert", $"uuid={cdUuid}", $"vdi-uuid={vdi}"), Is.Empty);
        Assert.That((await Client.InvokeAsync("VBD.get_empty", cd), await Client.InvokeAsync("VBD.get_VDI", cd)), Is.EqualTo((false, await VdiByUuidAsync(vdi))));
        Assert.That(await XeOkAsync("vbd-eject", $"uuid={cdUuid}"), Is.Empty);
        Assert.That((await Client.InvokeAsync("VBD.get_empty", cd), await Client.InvokeAsync("VBD.get_VDI", cd)), Is.EqualTo((true, "OpaqueRef:NULL")));
        var missing = await XeAsync("vbd-insert", $"uuid={cdUuid}");
        Assert.That((missing.ExitCode, missing.Stdout), Is.EqualTo((1, "")), missing.ToString());
    }

    [Test]
    public async Task Vbd_plug_and_unplug_pass_the_servers_refusal_for_a_halted_vm()
    {
        var vm = await Client.CreateVmAsync("halted owner", withDevices: false);
        var vmUuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
        var vdi = await NewVdiAsync("cold disk");
        var vbdUuid = (await XeOkAsync("vbd-create", $"vm-uuid={vmUuid}", $"vdi-uuid={vdi}", "device=1")).Trim();
        var vbd = (string)(await Client.InvokeAsync("VBD.get_by_uuid", vbdUuid))!;

        var plug = await XeAsync("vbd-plug", $"uuid={vbdUuid}");
        Assert.That((plug.ExitCode, plug.Stdout), Is.EqualTo((1, "")), plug.ToString());
        Assert.That(plug.Stderr, Is.Not.Empty);
        Assert.That(await Client.InvokeAsync("VBD.get_currently_attached", vbd), Is.EqualTo(false));
        var unplug = await XeAsync("vbd-unplug", $"uuid={vbdUuid}", "timeout=soon");
        Assert.That((unplug.ExitCode, unplug.Stderr), Is.EqualTo((1, "Error: Failed to parse parameter 'timeout': expecting a float\n")));
    }

    [Test]
    public async Task Sr_create_makes_a_plugged_sr_that_pbd_unplug_plug_scan_and_forget_act_on()
    {
        var uuid = (await XeOkAsync("sr-create", "name-label=cli dummy", "type=dummy", "device-config:purpose=tests")).Trim();
        var sr = (string)(await Client.InvokeAsync("SR.get_by_uuid", uuid))!;
        var record = await RecordAsync("SR", sr);
        Assert.That((record["name_label"], record["type"]), Is.EqualTo(("cli dummy", "dummy")));
        var pbds = (IReadOnlyList<object?>)record["PBDs"]!;
        Assert.That(pbds, Has.Count.EqualTo(1));
        var pbd = await RecordAsync("PBD", (string)pbds[0]!);
        Assert.That(pbd["currently_attached"], Is.EqualTo(true));
        Assert.That(((IReadOnlyDictionary<string, object?>)pbd["device_config"]!)["purpose"], Is.EqualTo("tests"));
        var pbdUuid = (string)pbd["uuid"]!;

        Assert.That(await XeOkAsync("sr-scan", $"uuid={uuid}"), Is.Empty);
        Assert.That(await XeOkAsync("pbd-unplug", $"uuid={pbdUuid}"), Is.Empty);
        Assert.That(await Client.InvokeAsync("PBD.get_currently_attached", pbds[0]), Is.EqualTo(false));
        Assert.That(await XeOkAsync("pbd-plug", $"uuid={pbdUuid}"), Is.Empty);
        Assert.That(await Client.InvokeAsync("PBD.get_currently_attached", pbds[0]), Is.EqualTo(true));
        Assert.That(await XeOkAsync("pbd-unplug", $"uuid={pbdUuid}"), Is.Empty);
        Assert.That(await XeOkAsync("sr-forget", $"uuid={uuid}"), Is.Empty);
        var gone = await XeAsync("sr-scan", $"uuid={uuid}");
        Assert.That(gone.ExitCode, Is.EqualTo(1));
    }

    [Test]
    public async Task Sr_destroy_removes_a_created_sr()
    {
        var uuid = (await XeOkAsync("sr-create", "name-label=to destroy", "type=dummy")).Trim();
        var pbd = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_PBDs", (string)(await Client.InvokeAsync("SR.get_by_uuid", uuid))!))!)[0]!;
        var attached = await XeAsync("sr-destroy", $"uuid={uuid}");
        Assert.That(attached.ExitCode, Is.EqualTo(1), "this daemon wants the SR detached first");
        await XeOkAsync("pbd-unplug", $"uuid={(string)(await Client.InvokeAsync("PBD.get_uuid", pbd))!}");
        Assert.That(await XeOkAsync("sr-destroy", $"uuid={uuid}"), Is.Empty);
        Assert.That((IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_by_name_label", "to destroy"))!, Is.Empty);
    }

    [Test]
    public async Task Sr_introduce_records_an_sr_by_its_uuid_without_pbds()
    {
        var uuid = Guid.NewGuid().ToString();
        Assert.That((await XeOkAsync("sr-introduce", $"uuid={uuid}", "name-label=introduced", "type=dummy", "content-type=user")).Trim(), Is.EqualTo(uuid));
        var record = await RecordAsync("SR", (string)(await Client.InvokeAsync("SR.get_by_uuid", uuid))!);
        Assert.That((record["name_label"], record["content_type"]), Is.EqualTo(("introduced", "user")));
        Assert.That((IReadOnlyList<object?>)record["PBDs"]!, Is.Empty);
        Assert.That(await XeOkAsync("sr-forget", $"uuid={uuid}"), Is.Empty);
    }
}
