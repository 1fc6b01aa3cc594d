using Xapi.Model;
using Xapi.Protocol;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// Device operations on running VMs over the wire, on the simulator: VBD hotplug, removable
/// media, VIF hotplug and moves, static address settings, and the consoles a running VM has
/// (/work/notes/vm-facts.md §6.4, §7.4, §8.3). What a client reads back and what the simulated
/// domain has are both checked.
/// </summary>
public class DeviceOperationTests() : SimulatedHostFixture()
{
    private const long MiB = 1L << 20;

    private async Task<object?> FieldAsync(string cls, string reference, string field) => (await RecordAsync(cls, reference))[field];

    private static IReadOnlyList<object?> List(object? value) => (IReadOnlyList<object?>)value!;

    private static async Task<string> VmAsync(XenApiClient client, string name, bool hvm = false)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        record["memory_static_min"] = (128 * MiB).ToString();
        record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (256 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        record["actions_after_shutdown"] = "destroy";
        if (hvm)
        {
            record["domain_type"] = "hvm";
            record["HVM_boot_policy"] = "BIOS order";
        }
        return (string)(await client.InvokeAsync("VM.create", record))!;
    }

    private static async Task<string> VdiAsync(XenApiClient client, string name)
    {
        var sr = List(await client.InvokeAsync("SR.get_by_name_label", "Local storage"))[0]!;
        var disk = ApiSchema.Class("VDI").MinimalRecord();
        disk["name_label"] = name;
        disk["SR"] = sr;
        disk["virtual_size"] = (4 * MiB).ToString();
        return (string)(await client.InvokeAsync("VDI.create", disk))!;
    }

    private static async Task<string> DiskAsync(XenApiClient client, string vm, string userdevice, Action<Dictionary<string, object?>>? edit = null)
    {
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = await VdiAsync(client, $"disk {userdevice}");
        vbd["userdevice"] = userdevice;
        vbd["type"] = "Disk";
        vbd["mode"] = "RW";
        vbd["unpluggable"] = true;
        edit?.Invoke(vbd);
        return (string)(await client.InvokeAsync("VBD.create", vbd))!;
    }

    private async Task<string> EmptyCdAsync(string vm, string userdevice = "3")
    {
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = XType.NullRef;
        vbd["userdevice"] = userdevice;
        vbd["type"] = "CD";
        vbd["mode"] = "RO";
        vbd["empty"] = true;
        vbd["unpluggable"] = false;
        return (string)(await Client.InvokeAsync("VBD.create", vbd))!;
    }

    private async Task<string> NetworkAsync(string name)
    {
        var network = ApiSchema.Class("network").MinimalRecord();
        network["name_label"] = name;
        return (string)(await Client.InvokeAsync("network.create", network))!;
    }

    private async Task<string> VifAsync(string vm, string device, string? network = null)
    {
        var vif = ApiSchema.Class("VIF").MinimalRecord();
        vif["VM"] = vm;
        vif["network"] = network ?? List(await Client.InvokeAsync("network.get_all"))[0];
        vif["device"] = device;
        vif["MAC"] = "";
        vif["MTU"] = "1500";
        return (string)(await Client.InvokeAsync("VIF.create", vif))!;
    }

    /// <summary>Follows the VM through event.from until <paramref name="until"/> holds for its record.</summary>
    private async Task<IReadOnlyDictionary<string, object?>> UntilAsync(string vm, Func<IReadOnlyDictionary<string, object?>, bool> until)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var token = "";
        var record = await RecordAsync("VM", vm);
        while (!until(record))
        {
            deadline.Token.ThrowIfCancellationRequested();
            var batch = await Client.FromAsync([$"VM/{vm}"], token, 5);
            token = batch.Token;
            record = await RecordAsync("VM", vm);
        }
        return record;
    }

    /// <summary>Starts the VM and waits for its guest agent (PV drivers) to report.</summary>
    private async Task<string> RunningWithDriversAsync(string vm)
    {
        await Client.InvokeAsync("VM.start", vm, false, false);
        await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef);
        return vm;
    }

    private async Task<DomainState> DomainAsync(string vm) =>
        (await Simulator.TryGetDomainAsync(Guid.Parse((string)(await FieldAsync("VM", vm, "uuid"))!)))!;

    [Test]
    public async Task A_disk_hot_plugged_into_a_running_HVM_guest_with_PV_drivers_is_attached_and_the_domain_has_it_until_unplugged()
    {
        var vm = await RunningWithDriversAsync(await VmAsync(Client, "hotplug", hvm: true));
        var vbd = await DiskAsync(Client, vm, "1");
        Assert.That(await FieldAsync("VBD", vbd, "currently_attached"), Is.False);

        await Client.InvokeAsync("VBD.plug", vbd);

        var plugged = await RecordAsync("VBD", vbd);
        Assert.That(plugged["currently_attached"], Is.True);
        Assert.That(List(plugged["allowed_operations"]), Does.Contain("unplug").And.Not.Contain("plug"));
        Assert.That((await DomainAsync(vm)).Vbds.Select(v => v.Device), Does.Contain("1"));

        await Client.InvokeAsync("VBD.unplug", vbd);

        Assert.That(await FieldAsync("VBD", vbd, "currently_attached"), Is.False);
        Assert.That((await DomainAsync(vm)).Vbds.Select(v => v.Device), Does.Not.Contain("1"));

        await Client.InvokeAsync("VBD.plug", vbd);
        await Client.InvokeAsync("VBD.unplug_force", vbd);
        Assert.That(await FieldAsync("VBD", vbd, "currently_attached"), Is.False);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Hotplug_refusals_name_the_device_or_the_VM_and_a_refused_call_changes_nothing()
    {
        var vm = await VmAsync(Client, "hotplug refusals");
        var fixedDisk = await DiskAsync(Client, vm, "0", b => b["unpluggable"] = false);
        var disk = await DiskAsync(Client, vm, "1");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.plug", disk), "VM_BAD_POWER_STATE", vm, "running", "halted");

        await RunningWithDriversAsync(vm);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.plug", disk), "DEVICE_ALREADY_ATTACHED", disk);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.unplug", fixedDisk), "VBD_NOT_UNPLUGGABLE", fixedDisk);
        await Client.InvokeAsync("VBD.unplug", disk);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.unplug", disk), "DEVICE_ALREADY_DETACHED", disk);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.unplug_force", disk), "DEVICE_ALREADY_DETACHED", disk);

        Assert.That(await FieldAsync("VBD", fixedDisk, "currently_attached"), Is.True);
        Assert.That((await DomainAsync(vm)).Vbds.Select(v => v.Device), Is.EqualTo(new[] { "0" }));
        Assert.That(await FieldAsync("VBD", disk, "current_operations"), Is.Empty);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task An_HVM_guest_without_PV_drivers_cannot_hotplug_a_disk_but_a_PV_guest_can()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.SimulatedGuestAgentDelay = TimeSpan.FromHours(1));
        using var client = await daemon.LoginAsync();
        var hvm = await VmAsync(client, "no drivers", hvm: true);
        var pv = await VmAsync(client, "pv no drivers");
        await client.InvokeAsync("VM.start", hvm, false, false);
        await client.InvokeAsync("VM.start", pv, false, false);
        var hvmDisk = await DiskAsync(client, hvm, "1");
        var pvDisk = await DiskAsync(client, pv, "1");

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VBD.plug", hvmDisk), "VM_MISSING_PV_DRIVERS", hvm);
        await client.InvokeAsync("VBD.plug", pvDisk);

        Assert.That(await client.InvokeAsync("VBD.get_currently_attached", hvmDisk), Is.False);
        Assert.That(await client.InvokeAsync("VBD.get_currently_attached", pvDisk), Is.True);
        Assert.That(await client.InvokeAsync("VBD.get_device", pvDisk), Is.EqualTo("xvdb"));
    }

    [Test]
    public async Task A_CD_in_a_running_HVM_guest_takes_and_gives_up_its_disc_in_place()
    {
        var vm = await VmAsync(Client, "cd hvm", hvm: true);
        var cd = await EmptyCdAsync(vm);
        var iso = await VdiAsync(Client, "installer.iso");
        await Client.InvokeAsync("VM.start", vm, false, false);
        Assert.That(await FieldAsync("VBD", cd, "currently_attached"), Is.True);

        await Client.InvokeAsync("VBD.insert", cd, iso);

        var inserted = await RecordAsync("VBD", cd);
        Assert.That(inserted["empty"], Is.False);
        Assert.That(inserted["VDI"], Is.EqualTo(iso));
        Assert.That(inserted["currently_attached"], Is.True);
        Assert.That(List(inserted["allowed_operations"]), Does.Contain("eject").And.Not.Contain("insert"));
        var isoUuid = (string)(await FieldAsync("VDI", iso, "uuid"))!;
        Assert.That((await DomainAsync(vm)).Vbds.Single(v => v.Device == "3").Disk, Is.EqualTo(new DiskBinding(isoUuid)));
        Assert.That(List(await FieldAsync("VDI", iso, "VBDs")), Is.EqualTo(new[] { cd }));
        Assert.That(List(await FieldAsync("VDI", iso, "allowed_operations")), Does.Not.Contain("destroy"));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.insert", cd, iso), "VBD_NOT_EMPTY", cd);

        await Client.InvokeAsync("VBD.eject", cd);

        var ejected = await RecordAsync("VBD", cd);
        Assert.That(ejected["empty"], Is.True);
        Assert.That(ejected["VDI"], Is.EqualTo(XType.NullRef));
        Assert.That(ejected["currently_attached"], Is.True);
        Assert.That((await DomainAsync(vm)).Vbds.Single(v => v.Device == "3").Disk, Is.Null);
        Assert.That(List(await FieldAsync("VDI", iso, "allowed_operations")), Does.Contain("destroy"));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.eject", cd), "VBD_IS_EMPTY", cd);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_CD_in_a_PV_guest_is_plugged_with_its_disc_and_unplugged_to_eject_it()
    {
        var vm = await VmAsync(Client, "cd pv");
        var cd = await EmptyCdAsync(vm);
        var iso = await VdiAsync(Client, "tools.iso");
        await Client.InvokeAsync("VM.start", vm, false, false);
        Assert.That(await FieldAsync("VBD", cd, "currently_attached"), Is.False);

        await Client.InvokeAsync("VBD.insert", cd, iso);

        var inserted = await RecordAsync("VBD", cd);
        Assert.That((inserted["empty"], inserted["VDI"], inserted["currently_attached"]), Is.EqualTo((false, iso, true)));
        Assert.That((await DomainAsync(vm)).Vbds.Select(v => v.Device), Does.Contain("3"));

        await Client.InvokeAsync("VBD.eject", cd);

        var ejected = await RecordAsync("VBD", cd);
        Assert.That((ejected["empty"], ejected["VDI"], ejected["currently_attached"]), Is.EqualTo((true, XType.NullRef, false)));
        Assert.That((await DomainAsync(vm)).Vbds.Select(v => v.Device), Does.Not.Contain("3"));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_halted_VMs_CD_changes_disc_in_its_records_only_and_a_disk_is_not_removable()
    {
        var vm = await VmAsync(Client, "cd halted");
        var cd = await EmptyCdAsync(vm);
        var disk = await DiskAsync(Client, vm, "0");
        var iso = await VdiAsync(Client, "halted.iso");

        await Client.InvokeAsync("VBD.insert", cd, iso);
        Assert.That(await FieldAsync("VBD", cd, "VDI"), Is.EqualTo(iso));
        Assert.That(List(await FieldAsync("VBD", cd, "allowed_operations")), Does.Contain("eject").And.Not.Contain("insert"));
        await Client.InvokeAsync("VBD.eject", cd);
        Assert.That(await FieldAsync("VBD", cd, "empty"), Is.True);
        Assert.That(await FieldAsync("VBD", cd, "VDI"), Is.EqualTo(XType.NullRef));

        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.insert", disk, iso), "VBD_NOT_REMOVABLE_MEDIA", disk);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.eject", disk), "VBD_NOT_REMOVABLE_MEDIA", disk);
    }

    [Test]
    public async Task A_network_interface_hot_plugged_into_a_running_VM_is_attached_and_the_domain_has_it_until_unplugged()
    {
        var vm = await VmAsync(Client, "vif hotplug");
        await VifAsync(vm, "0");
        await RunningWithDriversAsync(vm);
        var vif = await VifAsync(vm, "1");
        Assert.That(await FieldAsync("VIF", vif, "currently_attached"), Is.False);

        await Client.InvokeAsync("VIF.plug", vif);

        Assert.That(await FieldAsync("VIF", vif, "currently_attached"), Is.True);
        Assert.That((await DomainAsync(vm)).Vifs.Select(v => v.Device), Is.EqualTo(new[] { 0, 1 }));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.plug", vif), "DEVICE_ALREADY_ATTACHED", vif);

        await Client.InvokeAsync("VIF.unplug", vif);

        Assert.That(await FieldAsync("VIF", vif, "currently_attached"), Is.False);
        Assert.That((await DomainAsync(vm)).Vifs.Select(v => v.Device), Is.EqualTo(new[] { 0 }));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.unplug_force", vif), "DEVICE_ALREADY_DETACHED", vif);
        await Client.InvokeAsync("VIF.plug", vif);
        await Client.InvokeAsync("VIF.unplug_force", vif);
        Assert.That(await FieldAsync("VIF", vif, "currently_attached"), Is.False);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.plug", vif), "VM_BAD_POWER_STATE", vm, "running", "halted");
    }

    [Test]
    public async Task Moving_a_plugged_interface_joins_the_new_networks_bridge_and_a_halted_VMs_only_changes_its_record()
    {
        var vm = await VmAsync(Client, "vif move");
        var vif = await VifAsync(vm, "0");
        var other = await NetworkAsync("move target");
        var bridge = (string)(await FieldAsync("network", other, "bridge"))!;
        await Client.InvokeAsync("VM.start", vm, false, false);

        await Client.InvokeAsync("VIF.move", vif, other);

        var moved = await RecordAsync("VIF", vif);
        Assert.That(moved["network"], Is.EqualTo(other));
        Assert.That(moved["currently_attached"], Is.True);
        Assert.That((await DomainAsync(vm)).Vifs.Single().Bridge, Is.EqualTo(bridge));

        await Client.InvokeAsync("VM.hard_shutdown", vm);
        var first = List(await Client.InvokeAsync("network.get_all")).First(n => (string)n! != other)!;
        await Client.InvokeAsync("VIF.move", vif, first);
        Assert.That(await FieldAsync("VIF", vif, "network"), Is.EqualTo(first));
        Assert.That(await FieldAsync("VIF", vif, "currently_attached"), Is.False);
    }

    [Test]
    public async Task Static_addresses_are_checked_and_need_a_guest_that_applies_them()
    {
        var vm = await VmAsync(Client, "ip settings");
        var vif = await VifAsync(vm, "0");

        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.10", ""), "INVALID_CIDR_ADDRESS_SPECIFIED", "address");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.300/24", ""), "INVALID_CIDR_ADDRESS_SPECIFIED", "address");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.10/24", "192.168.1"), "INVALID_IP_ADDRESS_SPECIFIED", "gateway");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.10/24", "fd00::1"), "INVALID_IP_ADDRESS_SPECIFIED", "gateway");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv6", vif, "Static", "192.168.1.10/24", ""), "INVALID_CIDR_ADDRESS_SPECIFIED", "address");
        // No guest has said it can apply them: even clearing them is refused.
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.10/24", "192.168.1.1"), "VM_LACKS_FEATURE", vm);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "None", "", ""), "VM_LACKS_FEATURE", vm);
        Assert.That(await FieldAsync("VIF", vif, "ipv4_configuration_mode"), Is.EqualTo("None"));

        await RunningWithDriversAsync(vm);
        await Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "192.168.1.10/24", "192.168.1.1");
        await Client.InvokeAsync("VIF.configure_ipv6", vif, "Static", "fd00::10/64", "fd00::1");

        var configured = await RecordAsync("VIF", vif);
        Assert.That(configured["ipv4_configuration_mode"], Is.EqualTo("Static"));
        Assert.That(configured["ipv4_addresses"], Is.EqualTo(new[] { "192.168.1.10/24" }));
        Assert.That(configured["ipv4_gateway"], Is.EqualTo("192.168.1.1"));
        Assert.That(configured["ipv6_configuration_mode"], Is.EqualTo("Static"));
        Assert.That(configured["ipv6_addresses"], Is.EqualTo(new[] { "fd00::10/64" }));

        await Client.InvokeAsync("VIF.configure_ipv4", vif, "None", "", "");
        var cleared = await RecordAsync("VIF", vif);
        Assert.That((cleared["ipv4_configuration_mode"], cleared["ipv4_addresses"], cleared["ipv4_gateway"]), Is.EqualTo(("None", new[] { "" }, "")));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_locked_interface_takes_only_a_static_address_it_is_allowed()
    {
        var vm = await VmAsync(Client, "ip locked");
        var vif = await VifAsync(vm, "0");
        await RunningWithDriversAsync(vm);
        Daemon.Database.Write(tx => tx.Update(new VIFRef(vif), v =>
        {
            v.LockingMode = VifLockingMode.Locked;
            v.Ipv4Allowed = ["10.1.1.5"];
        }));

        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "10.1.1.6/24", ""), "ADDRESS_VIOLATES_LOCKING_CONSTRAINT", "10.1.1.6/24");
        await Client.InvokeAsync("VIF.configure_ipv4", vif, "Static", "10.1.1.5/24", "");
        Assert.That(await FieldAsync("VIF", vif, "ipv4_addresses"), Is.EqualTo(new[] { "10.1.1.5/24" }));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_running_VM_has_one_console_at_its_hosts_address_which_goes_when_it_halts()
    {
        var pv = await VmAsync(Client, "console pv");
        var hvm = await VmAsync(Client, "console hvm", hvm: true);
        Assert.That(await FieldAsync("VM", pv, "consoles"), Is.Empty);
        var host = List(await Client.InvokeAsync("host.get_all"))[0]!;
        var address = (string)(await FieldAsync("host", (string)host, "address"))!;

        await Client.InvokeAsync("VM.start", pv, false, false);
        await Client.InvokeAsync("VM.start", hvm, false, false);

        var consoles = List(await FieldAsync("VM", pv, "consoles"));
        Assert.That(consoles, Has.Count.EqualTo(1));
        var console = await RecordAsync("console", (string)consoles[0]!);
        Assert.That(console["protocol"], Is.EqualTo("vt100"));
        Assert.That(console["location"], Is.EqualTo($"https://{address}/console?uuid={console["uuid"]}"));
        Assert.That(console["VM"], Is.EqualTo(pv));
        Assert.That(console["other_config"], Is.Empty);
        var graphical = List(await FieldAsync("VM", hvm, "consoles"));
        Assert.That(await FieldAsync("console", (string)graphical.Single()!, "protocol"), Is.EqualTo("rfb"));

        await Client.InvokeAsync("VM.hard_reboot", pv);
        Assert.That(List(await FieldAsync("VM", pv, "consoles")), Has.Count.EqualTo(1));

        await Client.InvokeAsync("VM.hard_shutdown", pv);
        await Client.InvokeAsync("VM.hard_shutdown", hvm);

        Assert.That(await FieldAsync("VM", pv, "consoles"), Is.Empty);
        Assert.That(await FieldAsync("VM", hvm, "consoles"), Is.Empty);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("console.get_record", consoles[0]), "HANDLE_INVALID", "console", (string)consoles[0]!);
    }
}
