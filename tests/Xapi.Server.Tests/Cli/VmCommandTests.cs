using System.Globalization;
using Xapi.Model;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>
/// The VM commands of the built <c>xe</c> against a simulated host: what they print, how they
/// exit, and what a XenAPI client then finds.
/// </summary>
public class VmCommandTests() : XeFixture()
{
    private const long MiB = 1L << 20;

    private static IReadOnlyList<string> Refs(object? value) => ((IReadOnlyList<object?>)value!).Select(v => (string)v!).ToList();

    private static IReadOnlyDictionary<string, object?> Map(object? value) => (IReadOnlyDictionary<string, object?>)value!;

    private async Task<string> UuidAsync(string cls, string reference) => (string)(await Client.InvokeAsync($"{cls}.get_uuid", reference))!;

    private async Task<string> RefAsync(string cls, string uuid) => (string)(await Client.InvokeAsync($"{cls}.get_by_uuid", uuid))!;

    private async Task<string> PowerAsync(string vm) => (string)(await Client.InvokeAsync("VM.get_power_state", vm))!;

    private async Task<bool> ExistsAsync(string cls, string reference) => Refs(await Client.InvokeAsync($"{cls}.get_all")).Contains(reference);

    private async Task<string> LocalSrAsync() => Refs(await Client.InvokeAsync("SR.get_by_name_label", "Local storage"))[0];

    // A halted VM with one disk and one VIF, named uniquely for the test.
    private async Task<(string Ref, string Uuid)> VmAsync(string name, Action<Dictionary<string, object?>>? edit = null, bool withDevices = true)
    {
        var vm = await Client.CreateVmAsync(name, edit, withDevices);
        return (vm, await UuidAsync("VM", vm));
    }

    // A small installable template: its other-config:disks asks for one 8 MiB system disk on no SR in particular.
    private async Task<(string Ref, string Uuid)> TemplateAsync(string name) =>
        await VmAsync(name, r =>
        {
            r["is_a_template"] = true;
            r["other_config"] = new Dictionary<string, object?>
            {
                ["disks"] = $"<provision><disk device=\"0\" size=\"{8 * MiB}\" sr=\"\" bootable=\"true\" type=\"system\"/></provision>",
            };
        }, withDevices: false);

    private async Task<XeResult> XeWithInputAsync(string stdin, params string[] args) =>
        await Xe.RunRawAsync([.. args, .. Xe.ConnectionArgs(Daemon)], stdin: stdin);

    private static void Fails(XeResult result, string stderr)
    {
        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Is.EqualTo(stderr), result.ToString());
    }

    [Test]
    public async Task The_administrators_script_installs_adds_a_disk_starts_snapshots_reverts_shuts_down_and_uninstalls_a_vm()
    {
        await TemplateAsync("script template");
        var localSr = await LocalSrAsync();

        // vm-install: a new VM with the template's disk provisioned on the pool's default SR.
        var installed = await XeOkAsync("vm-install", "template=script template", "new-name-label=script vm");
        var uuid = installed.TrimEnd('\n');
        Assert.That(installed, Does.Match("^[0-9a-f-]{36}\n$"));
        var vm = await RefAsync("VM", uuid);
        var record = await RecordAsync("VM", vm);
        Assert.Multiple(() =>
        {
            Assert.That(record["name_label"], Is.EqualTo("script vm"));
            Assert.That(record["name_description"], Is.EqualTo("Installed via xe CLI"));
            Assert.That(record["is_a_template"], Is.False);
            Assert.That(record["power_state"], Is.EqualTo("Halted"));
        });
        var systemVbd = Refs(record["VBDs"]).Single();
        var systemVdi = (string)(await RecordAsync("VBD", systemVbd))["VDI"]!;
        Assert.That((await RecordAsync("VDI", systemVdi))["SR"], Is.EqualTo(localSr));
        Assert.That((await RecordAsync("VDI", systemVdi))["virtual_size"], Is.EqualTo((8 * MiB).ToString(CultureInfo.InvariantCulture)));

        // vm-disk-add: a second disk, owned by the VM.
        Assert.That(await XeOkAsync("vm-disk-add", "vm=script vm", "disk-size=4MiB", "device=1"), Is.Empty);
        var vbds = Refs((await RecordAsync("VM", vm))["VBDs"]);
        Assert.That(vbds, Has.Count.EqualTo(2));
        var added = await RecordAsync("VBD", vbds.Single(b => b != systemVbd));
        var addedVdi = (string)added["VDI"]!;
        var addedDisk = await RecordAsync("VDI", addedVdi);
        Assert.Multiple(() =>
        {
            Assert.That(added["userdevice"], Is.EqualTo("1"));
            Assert.That(Map(added["other_config"]).ContainsKey("owner"), Is.True);
            Assert.That(addedDisk["name_label"], Is.EqualTo("Created by xe"));
            Assert.That(addedDisk["virtual_size"], Is.EqualTo((4 * MiB).ToString(CultureInfo.InvariantCulture)));
        });

        // vm-start
        Assert.That(await XeOkAsync("vm-start", "vm=" + uuid), Is.Empty);
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));

        // vm-snapshot: prints the snapshot's uuid.
        var snapshotUuid = (await XeOkAsync("vm-snapshot", "vm=script vm", "new-name-label=before")).TrimEnd('\n');
        var snapshot = await RefAsync("VM", snapshotUuid);
        var snap = await RecordAsync("VM", snapshot);
        Assert.That((snap["is_a_snapshot"], snap["snapshot_of"], snap["name_label"]), Is.EqualTo((true, (object)vm, "before")));

        // snapshot-revert: the VM is back as it was snapshotted (halted, with its old description).
        await Client.InvokeAsync("VM.set_name_description", vm, "changed after the snapshot");
        Assert.That(await XeOkAsync("snapshot-revert", "snapshot-uuid=" + snapshotUuid), Is.Empty);
        Assert.That(await PowerAsync(vm), Is.EqualTo("Halted"));
        Assert.That((await RecordAsync("VM", vm))["name_description"], Is.EqualTo("Installed via xe CLI"));

        // vm-shutdown (of the reverted VM, started again).
        await XeOkAsync("vm-start", "vm=script vm");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
        Assert.That(await XeOkAsync("vm-shutdown", "vm=script vm"), Is.Empty);
        Assert.That(await PowerAsync(vm), Is.EqualTo("Halted"));

        // vm-uninstall --force: the VM, its snapshot and the disks they own are gone.
        var disks = Refs((await RecordAsync("VM", vm))["VBDs"]).Select(async b => (string)(await RecordAsync("VBD", b))["VDI"]!);
        var vdis = await Task.WhenAll(disks);
        var uninstall = await XeOkAsync("vm-uninstall", "vm=script vm", "--force");
        var lines = uninstall.TrimEnd('\n').Split('\n');
        Assert.That(lines[0], Is.EqualTo("The following items are about to be destroyed"));
        Assert.That(lines[1], Is.EqualTo($"VM : {uuid} (script vm)"));
        Assert.That(lines, Does.Contain($"VM : {snapshotUuid} (before)"));
        Assert.That(lines[^1], Is.EqualTo("All objects destroyed"));
        Assert.That(lines.Count(l => l.StartsWith("VDI: ", StringComparison.Ordinal)), Is.EqualTo(4), "two disks of the VM, two of its snapshot");
        Assert.That(await ExistsAsync("VM", vm), Is.False);
        Assert.That(await ExistsAsync("VM", snapshot), Is.False);
        foreach (var vdi in vdis)
        {
            Assert.That(await ExistsAsync("VDI", vdi), Is.False);
        }
    }

    [Test]
    public async Task Vm_install_from_a_first_boot_template_names_the_template_by_name_or_uuid_and_an_sr_makes_it_a_copy_there()
    {
        var debian = Refs(await Client.InvokeAsync("VM.get_by_name_label", "Debian Bookworm 12"))[0];
        var byName = (await XeOkAsync("vm-install", "template=Debian Bookworm 12", "new-name-label=deb by name")).TrimEnd('\n');
        var vm = await RefAsync("VM", byName);
        var record = await RecordAsync("VM", vm);
        Assert.That((record["name_label"], record["is_a_template"]), Is.EqualTo(("deb by name", false)));
        Assert.That(Refs(record["VBDs"]), Has.Count.EqualTo(1), "the template's one disk");

        var sr = await LocalSrAsync();
        var byUuid = (await XeOkAsync("vm-install", "template=" + await UuidAsync("VM", debian), "new-name-label=deb by uuid",
            "sr-uuid=" + await UuidAsync("SR", sr))).TrimEnd('\n');
        var copy = await RecordAsync("VM", await RefAsync("VM", byUuid));
        Assert.That(copy["suspend_SR"], Is.EqualTo(sr));
        var vdi = (string)(await RecordAsync("VBD", Refs(copy["VBDs"])[0]))["VDI"]!;
        Assert.That((await RecordAsync("VDI", vdi))["SR"], Is.EqualTo(sr));

        Fails(await XeAsync("vm-install", "template=no such template", "new-name-label=x"), "Error: No templates matched\n");
        Fails(await XeAsync("vm-install", "new-name-label=x"),
            "Error: Template must be specified by parameter 'template-uuid', 'template-name', 'template-name-label' or 'template'\n");
        Fails(await XeAsync("vm-install", "template-uuid=nope", "new-name-label=x"), "Error: Cannot find template\n");
        Fails(await XeAsync("vm-install", "template=Debian Bookworm 12", "new-name-label=x", "sr-name-label=no such sr"),
            "Error: No SR with that name-label found\n");
        Fails(await XeAsync("vm-install", "template=" + byName, "new-name-label=x"), "Error: Can only install from templates\n");
        Assert.That(Refs(await Client.InvokeAsync("VM.get_by_name_label", "x")), Is.Empty, "no half-installed VM is left");
    }

    [Test]
    public async Task A_selector_matching_nothing_or_several_vms_without_multiple_is_refused_and_templates_and_dom0_are_never_selected()
    {
        var (a, _) = await VmAsync("twin", withDevices: false);
        var (b, _) = await VmAsync("twin", withDevices: false);

        Fails(await XeAsync("vm-start", "vm=nobody"), "Error: No matching VMs found\n");
        Fails(await XeAsync("vm-start", "vm=twin"), "Error: Multiple matches VMs found. --multiple required to complete the operation\n");
        Fails(await XeAsync("vm-copy", "vm=twin", "new-name-label=c", "--multiple"),
            "Error: Multiple matches VMs found. Operation can only be performed on one VM at a time\n");
        Fails(await XeAsync("vm-start", "vm=Debian Bookworm 12"), "Error: No matching VMs found\n");
        Fails(await XeAsync("vm-shutdown", "is-control-domain=true"), "Error: No matching VMs found\n");
        Assert.That((await PowerAsync(a), await PowerAsync(b)), Is.EqualTo(("Halted", "Halted")), "nothing ran");

        // A template IS selectable where real xe allows it: vm-clone.
        var clone = (await XeOkAsync("vm-clone", "vm=Debian Bookworm 12", "new-name-label=from template")).TrimEnd('\n');
        Assert.That((await RecordAsync("VM", await RefAsync("VM", clone)))["is_a_template"], Is.True);
    }

    [Test]
    public async Task With_multiple_every_selected_vm_is_acted_on_and_each_failure_gets_its_own_line_while_the_others_go_ahead()
    {
        var (a, _) = await VmAsync("multi a", r => r["name_description"] = "multi group", withDevices: false);
        var (b, bUuid) = await VmAsync("multi b", r => r["name_description"] = "multi group", withDevices: false);

        Assert.That(await XeOkAsync("vm-start", "name-description=multi group", "--multiple"), Is.Empty);
        Assert.That((await PowerAsync(a), await PowerAsync(b)), Is.EqualTo(("Running", "Running")));

        await Client.InvokeAsync("VM.hard_shutdown", a);
        var mixed = await XeAsync("vm-start", "name-description=multi group", "--multiple");
        Assert.That(mixed.ExitCode, Is.EqualTo(1), mixed.ToString());
        // As a single command's error would print: the datamodel's sentence, then the parameters by name.
        Assert.That(mixed.Stdout, Does.StartWith($"operation failed on {bUuid}: You attempted an operation on a VM that was not in an appropriate power state"), mixed.ToString());
        Assert.That(mixed.Lines.Skip(1), Is.EqualTo(new[] { $"vm: {bUuid} (multi b)", "expected: halted", "actual: running" }));
        Assert.That(mixed.Stderr, Is.Empty);
        Assert.That(await PowerAsync(a), Is.EqualTo("Running"), "the halted one started despite the other's failure");

        Assert.That(await XeOkAsync("vm-shutdown", "name-description=multi group", "multiple=true", "--force"), Is.Empty);
        Assert.That((await PowerAsync(a), await PowerAsync(b)), Is.EqualTo(("Halted", "Halted")));
    }

    [Test]
    public async Task The_power_commands_pause_unpause_suspend_resume_reboot_and_force_shutdown_a_vm()
    {
        var (vm, uuid) = await VmAsync("power", withDevices: false);
        var host = await HostAsync();

        await XeOkAsync("vm-start", "uuid=" + uuid, "paused=true", "on=" + await UuidAsync("host", host));
        Assert.That(await PowerAsync(vm), Is.EqualTo("Paused"));
        Assert.That((await RecordAsync("VM", vm))["resident_on"], Is.EqualTo(host));
        await XeOkAsync("vm-unpause", "vm=power");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
        await XeOkAsync("vm-pause", "vm=power");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Paused"));
        await XeOkAsync("vm-unpause", "vm=power");

        var domid = (await RecordAsync("VM", vm))["domid"];
        await XeOkAsync("vm-reboot", "vm=power", "--force");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
        Assert.That((await RecordAsync("VM", vm))["domid"], Is.Not.EqualTo(domid), "a new domain after the reboot");

        await XeOkAsync("vm-suspend", "vm=power");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Suspended"));
        await XeOkAsync("vm-resume", "vm=power");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));

        await XeOkAsync("vm-shutdown", "vm=power", "--force");
        Assert.That(await PowerAsync(vm), Is.EqualTo("Halted"));

        // A power operation the VM's state forbids: the server's error, exit 1.
        var again = await XeAsync("vm-shutdown", "vm=power");
        Assert.That(again.ExitCode, Is.EqualTo(1), again.ToString());
        Assert.That(again.Stderr, Does.Contain("VM_BAD_POWER_STATE").Or.Contain("power state"), again.ToString());
        Fails(await XeAsync("vm-start", "vm=power", "on=no such host"), "Error: Host no such host not found\n");
        Fails(await XeAsync("vm-start", "vm=power", "paused=perhaps"),
            "Error: Failed to parse parameter 'paused': Expected 'true','t','yes','y','1','false','f','no','n','0' got perhaps\n");
    }

    [Test]
    public async Task Vm_reboot_without_force_asks_the_guest_and_the_vm_runs_on()
    {
        var (vm, _) = await VmAsync("clean reboot", withDevices: false);
        await XeOkAsync("vm-start", "vm=clean reboot");
        var started = (await RecordAsync("VM", vm))["domid"];
        Assert.That(await XeOkAsync("vm-reboot", "vm=clean reboot"), Is.Empty);
        var record = await RecordAsync("VM", vm);
        Assert.That(record["power_state"], Is.EqualTo("Running"));
        Assert.That(record["domid"], Is.Not.EqualTo(started), "the guest came back as a new domain");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Vm_clone_and_vm_copy_print_the_new_uuid_and_copy_puts_the_disks_on_the_named_sr()
    {
        var (vm, _) = await VmAsync("original");
        var clone = (await XeOkAsync("vm-clone", "vm=original", "new-name-label=cloned", "new-name-description=a clone")).TrimEnd('\n');
        var cloned = await RecordAsync("VM", await RefAsync("VM", clone));
        Assert.That((cloned["name_label"], cloned["name_description"]), Is.EqualTo(("cloned", "a clone")));
        Assert.That(Refs(cloned["VBDs"]), Has.Count.EqualTo(1));

        var sr = await LocalSrAsync();
        var copy = (await XeOkAsync("vm-copy", "vm=original", "new-name-label=copied", "sr-uuid=" + await UuidAsync("SR", sr))).TrimEnd('\n');
        var copied = await RecordAsync("VM", await RefAsync("VM", copy));
        Assert.That(copied["name_label"], Is.EqualTo("copied"));
        var vdi = (string)(await RecordAsync("VBD", Refs(copied["VBDs"])[0]))["VDI"]!;
        var original = (string)(await RecordAsync("VBD", Refs((await RecordAsync("VM", vm))["VBDs"])[0]))["VDI"]!;
        Assert.That(vdi, Is.Not.EqualTo(original));
        Assert.That((await RecordAsync("VDI", vdi))["SR"], Is.EqualTo(sr));

        var minimal = await XeOkAsync("vm-clone", "vm=original", "new-name-label=minimal clone", "--minimal");
        Assert.That(minimal, Does.Match("^[0-9a-f-]{36}\n$"));
        var missing = await XeAsync("vm-clone", "vm=original");
        Assert.That(missing.ExitCode, Is.EqualTo(1));
        Assert.That(missing.Stderr, Does.StartWith("Required parameter not found: new-name-label\n"));
    }

    [Test]
    public async Task Snapshot_revert_wants_a_snapshot_uuid_and_refuses_an_ordinary_vm()
    {
        var (_, uuid) = await VmAsync("not a snapshot", withDevices: false);
        Fails(await XeAsync("snapshot-revert"), "Error: Required parameter not found: snapshot-uuid or uuid.\n");
        Fails(await XeAsync("snapshot-revert", "uuid=" + uuid),
            $"Error: This operation can only be performed on a VM snapshot. {uuid} is not a VM snapshot.\n");

        // uuid= names the snapshot too.
        var snapshot = (await XeOkAsync("vm-snapshot", "uuid=" + uuid, "new-name-label=s")).TrimEnd('\n');
        var vm = await RefAsync("VM", uuid);
        await Client.InvokeAsync("VM.set_name_description", vm, "later");
        await XeOkAsync("snapshot-revert", "uuid=" + snapshot);
        Assert.That((await RecordAsync("VM", vm))["name_description"], Is.EqualTo(""));
    }

    [Test]
    public async Task Vm_uninstall_without_force_lists_what_goes_and_destroys_only_when_the_user_types_yes()
    {
        var installed = (await XeOkAsync("vm-install", "template=" + (await TemplateAsync("uninstall template")).Uuid, "new-name-label=to uninstall")).TrimEnd('\n');
        var vm = await RefAsync("VM", installed);
        var vdi = (string)(await RecordAsync("VBD", Refs((await RecordAsync("VM", vm))["VBDs"])[0]))["VDI"]!;
        var vdiUuid = await UuidAsync("VDI", vdi);

        var declined = await XeWithInputAsync("no\n", "vm-uninstall", "vm=to uninstall");
        Assert.That(declined.ExitCode, Is.Zero, declined.ToString());
        Assert.That(declined.Stdout, Is.EqualTo(
            "The following items are about to be destroyed\n"
            + $"VM : {installed} (to uninstall)\n"
            + $"VDI: {vdiUuid} (0) \n"
            + "Type 'yes' to continue\n"
            + "Aborted (you typed: 'no')\n"));
        Assert.That(await ExistsAsync("VM", vm), Is.True);

        var accepted = await XeWithInputAsync(" YES \n", "vm-uninstall", "vm=to uninstall");
        Assert.That(accepted.ExitCode, Is.Zero, accepted.ToString());
        Assert.That(accepted.Lines[^1], Is.EqualTo("All objects destroyed"));
        Assert.That(await ExistsAsync("VM", vm), Is.False);
        Assert.That(await ExistsAsync("VDI", vdi), Is.False);
    }

    [Test]
    public async Task Vm_uninstall_keeps_disks_the_vm_does_not_own()
    {
        var (vm, _) = await VmAsync("borrower");
        var vdi = (string)(await RecordAsync("VBD", Refs((await RecordAsync("VM", vm))["VBDs"])[0]))["VDI"]!;
        var output = await XeOkAsync("vm-uninstall", "vm=borrower", "--force");
        Assert.That(output, Does.Not.Contain("VDI:"));
        Assert.That(await ExistsAsync("VM", vm), Is.False);
        Assert.That(await ExistsAsync("VDI", vdi), Is.True, "a disk attached without other-config:owner stays");
    }

    [Test]
    public async Task Vm_disk_add_reads_sizes_with_units_and_refuses_a_size_it_cannot_read()
    {
        var (vm, _) = await VmAsync("disks", withDevices: false);
        await XeOkAsync("vm-disk-add", "vm=disks", "disk-size=2048KiB", "device=3", "sr-uuid=" + await UuidAsync("SR", await LocalSrAsync()));
        var vbd = await RecordAsync("VBD", Refs((await RecordAsync("VM", vm))["VBDs"]).Single());
        Assert.That((await RecordAsync("VDI", (string)vbd["VDI"]!))["virtual_size"], Is.EqualTo((2 * MiB).ToString(CultureInfo.InvariantCulture)));
        Assert.That(vbd["userdevice"], Is.EqualTo("3"));

        Fails(await XeAsync("vm-disk-add", "vm=disks", "disk-size=lots", "device=4"),
            "Error: Failed to parse field 'disk-size': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'lots'\n");
        var missing = await XeAsync("vm-disk-add", "vm=disks", "device=4");
        Assert.That(missing.ExitCode, Is.EqualTo(1));
        Assert.That(missing.Stderr, Does.StartWith("Required parameter not found: disk-size\n"));
    }

    [Test]
    public async Task Vm_cd_insert_puts_the_named_iso_in_the_empty_drive_and_vm_cd_eject_takes_it_out()
    {
        var isoSr = "";
        foreach (var sr in Refs(await Client.InvokeAsync("SR.get_all")))
        {
            if ((string)(await Client.InvokeAsync("SR.get_type", sr))! == "iso")
            {
                isoSr = sr;
            }
        }
        await File.WriteAllBytesAsync(Path.Combine(Daemon.Host.Options.DataDir, "iso", "tools.iso"), new byte[64 * 1024]);
        await Client.InvokeAsync("SR.scan", isoSr);
        var iso = Refs(await Client.InvokeAsync("VDI.get_by_name_label", "tools.iso")).Single();

        var (vm, _) = await VmAsync("cd user", withDevices: false);
        var drive = ApiSchema.Class("VBD").MinimalRecord();
        drive["VM"] = vm;
        drive["VDI"] = XType.NullRef;
        drive["userdevice"] = "3";
        drive["type"] = "CD";
        drive["mode"] = "RO";
        drive["empty"] = true;
        var cd = (string)(await Client.InvokeAsync("VBD.create", drive))!;

        Fails(await XeAsync("vm-cd-insert", "vm=cd user", "cd-name=missing.iso"), "Error: CD missing.iso not found\n");
        Assert.That(await XeOkAsync("vm-cd-insert", "vm=cd user", "cd-name=tools.iso"), Is.Empty);
        var inserted = await RecordAsync("VBD", cd);
        Assert.That((inserted["empty"], inserted["VDI"]), Is.EqualTo((false, (object)iso)));

        Assert.That(await XeOkAsync("vm-cd-eject", "vm=cd user"), Is.Empty);
        Assert.That((await RecordAsync("VBD", cd))["empty"], Is.True);

        var (_, _) = await VmAsync("no drive", withDevices: false);
        Fails(await XeAsync("vm-cd-eject", "vm=no drive"), "Error: No CDs found\n");
    }

    [Test]
    public async Task Vif_create_adds_a_vif_with_the_given_mac_and_vm_vif_list_shows_it()
    {
        var (vm, uuid) = await VmAsync("networked", withDevices: false);
        var network = Refs(await Client.InvokeAsync("network.get_all"))[0];
        var created = await XeOkAsync("vif-create", "vm-uuid=" + uuid, "network-uuid=" + await UuidAsync("network", network),
            "device=2", "mac=aa:bb:cc:dd:ee:ff");
        var vifUuid = created.TrimEnd('\n');
        var vif = await RecordAsync("VIF", await RefAsync("VIF", vifUuid));
        Assert.Multiple(async () =>
        {
            Assert.That(vif["VM"], Is.EqualTo(vm));
            Assert.That(vif["network"], Is.EqualTo(network));
            Assert.That(vif["device"], Is.EqualTo("2"));
            Assert.That(vif["MAC"], Is.EqualTo("aa:bb:cc:dd:ee:ff"));
            Assert.That(vif["MTU"], Is.EqualTo(await Client.InvokeAsync("network.get_MTU", network)));
        });

        var random = (await XeOkAsync("vif-create", "vm-uuid=" + uuid, "network-uuid=" + await UuidAsync("network", network), "device=3", "mac=random")).TrimEnd('\n');
        var mac = (string)(await RecordAsync("VIF", await RefAsync("VIF", random)))["MAC"]!;
        Assert.That(mac, Does.Match("^([0-9a-f]{2}:){5}[0-9a-f]{2}$"));
        Assert.That(Convert.ToInt32(mac[..2], 16) & 0x3, Is.EqualTo(0x2), "locally administered, unicast");

        var listed = await XeOkAsync("vm-vif-list", "vm=networked");
        Assert.That(listed, Does.Contain(vifUuid).And.Contain(random).And.Contain("aa:bb:cc:dd:ee:ff"));
        var minimal = await XeOkAsync("vm-vif-list", "vm=networked", "--minimal");
        Assert.That(minimal.TrimEnd('\n').Split(','), Is.EquivalentTo(new[] { vifUuid, random }));

        var bad = await XeAsync("vif-create", "vm-uuid=nope", "network-uuid=" + await UuidAsync("network", network), "device=4");
        Assert.That(bad.ExitCode, Is.EqualTo(1), bad.ToString());
        Assert.That(bad.Stderr, Does.Contain("nope"));
    }

    [Test]
    public async Task Vif_plug_and_unplug_attach_and_detach_a_vif_of_a_running_vm()
    {
        var (vm, uuid) = await VmAsync("hotplugged", withDevices: false);
        var network = Refs(await Client.InvokeAsync("network.get_all"))[0];
        var vifUuid = (await XeOkAsync("vif-create", "vm-uuid=" + uuid, "network-uuid=" + await UuidAsync("network", network), "device=1")).TrimEnd('\n');
        var vif = await RefAsync("VIF", vifUuid);
        await Client.InvokeAsync("VM.start", vm, false, false);
        Assert.That(await Client.InvokeAsync("VIF.get_currently_attached", vif), Is.EqualTo(true), "a VIF made before the start is plugged by it");

        Assert.That(await XeOkAsync("vif-unplug", "uuid=" + vifUuid), Is.Empty);
        Assert.That(await Client.InvokeAsync("VIF.get_currently_attached", vif), Is.EqualTo(false));
        Assert.That(await XeOkAsync("vif-plug", "uuid=" + vifUuid), Is.Empty);
        Assert.That(await Client.InvokeAsync("VIF.get_currently_attached", vif), Is.EqualTo(true));
        Assert.That(await XeOkAsync("vif-unplug", "uuid=" + vifUuid, "force=true"), Is.Empty);
        Assert.That(await Client.InvokeAsync("VIF.get_currently_attached", vif), Is.EqualTo(false));

        var again = await XeAsync("vif-unplug", "uuid=" + vifUuid);
        Assert.That(again.ExitCode, Is.EqualTo(1), "an unplugged VIF cannot be unplugged: the server's refusal");
        Assert.That(again.Stderr, Is.Not.Empty);
    }

    [Test]
    public async Task Event_wait_returns_at_once_when_an_object_already_matches_and_otherwise_when_a_change_makes_one_match()
    {
        var (vm, uuid) = await VmAsync("waited on", withDevices: false);
        Assert.That(await XeOkAsync("event-wait", "class=vm", "uuid=" + uuid, "name-label=waited on"), Is.Empty);
        Assert.That(await XeOkAsync("event-wait", "class=vm", "uuid=" + uuid, "name-label=/=something else"), Is.Empty);

        var waiting = XeAsync("event-wait", "class=vm", "uuid=" + uuid, "name-label=renamed");
        Assert.That(await Task.WhenAny(waiting, Task.Delay(TimeSpan.FromSeconds(1))), Is.Not.SameAs(waiting), "nothing matches yet");
        await Client.InvokeAsync("VM.set_name_label", vm, "renamed");
        var done = await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(done.ExitCode, Is.Zero, done.ToString());

        Fails(await XeAsync("event-wait", "class=vm", "timeout=5"), "Error: key missing: timeout\n");
        Fails(await XeAsync("event-wait", "class=console", "uuid=x"), "Error: Cli listening for class 'console' not currently implemented\n");
    }

    [Test]
    public async Task Task_cancel_sets_a_pending_task_cancelling_and_a_bad_uuid_is_the_servers_error()
    {
        var task = (string)(await Client.InvokeAsync("task.create", "long job", ""))!;
        Assert.That(await XeOkAsync("task-cancel", "uuid=" + await UuidAsync("task", task)), Is.Empty);
        var status = (string)(await Client.InvokeAsync("task.get_status", task))!;
        Assert.That(status, Is.EqualTo("cancelling").Or.EqualTo("cancelled"));

        var bad = await XeAsync("task-cancel", "uuid=nope");
        Assert.That(bad.ExitCode, Is.EqualTo(1), bad.ToString());
        Assert.That(bad.Stderr, Does.Contain("nope"));
    }
}
