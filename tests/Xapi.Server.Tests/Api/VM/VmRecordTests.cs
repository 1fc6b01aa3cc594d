using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The records a client makes before any VM runs: VM.create and VM.destroy, VBD.create and
/// VIF.create, and the device lists clients pick from, with the real server's rules and errors.
/// </summary>
public class VmRecordTests() : LoggedInFixture(RpcDialect.XmlRpc)
{
    private const long GiB = 1L << 30;

    private async Task<IReadOnlyDictionary<string, object?>> RecordAsync(string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls}.get_record", reference))!;

    private async Task<IReadOnlyList<string>> AllAsync(string cls) =>
        ((IReadOnlyList<object?>)(await Client.InvokeAsync($"{cls}.get_all"))!).Select(r => (string)r!).ToList();

    // VBD_metrics and VIF_metrics are removed from the API (their messages answer MESSAGE_REMOVED),
    // but real hosts still keep the rows: read them from the database.
    private IReadOnlyList<string> Stored(string cls) => Daemon.Database.Snapshot.All(ApiSchema.Class(cls)).Select(r => r.Ref).ToList();

    private static Dictionary<string, object?> VmRecord(string name, Action<Dictionary<string, object?>>? edit = null)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        edit?.Invoke(record);
        return record;
    }

    private async Task<string> CreateVmAsync(string name, Action<Dictionary<string, object?>>? edit = null) =>
        (string)(await Client.InvokeAsync("VM.create", VmRecord(name, edit)))!;

    /// <summary>Changes a VM's row behind the API's back (a state only a running backend gives) and waits until clients see it.</summary>
    private async Task ForceAsync(string vm, Action<VMValues> edit)
    {
        Daemon.Database.Write(tx => tx.Update(new VMRef(vm), edit));
        await Daemon.SettledAsync();
    }

    private async Task<string> LocalSrAsync() =>
        (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_by_name_label", "Local storage"))!)[0]!;

    private async Task<string> CreateVdiAsync(bool readOnly = false)
    {
        var record = ApiSchema.Class("VDI").MinimalRecord();
        record["name_label"] = "disk";
        record["SR"] = await LocalSrAsync();
        record["virtual_size"] = "1048576";
        record["read_only"] = readOnly;
        return (string)(await Client.InvokeAsync("VDI.create", record))!;
    }

    private static Dictionary<string, object?> VbdRecord(string vm, string vdi, string userdevice, string type = "Disk", string mode = "RW", bool empty = false)
    {
        var record = ApiSchema.Class("VBD").MinimalRecord();
        record["VM"] = vm;
        record["VDI"] = vdi;
        record["userdevice"] = userdevice;
        record["type"] = type;
        record["mode"] = mode;
        record["empty"] = empty;
        return record;
    }

    private Task<object?> CreateVbdAsync(string vm, string vdi, string userdevice, string type = "Disk", string mode = "RW", bool empty = false) =>
        Client.InvokeAsync("VBD.create", VbdRecord(vm, vdi, userdevice, type, mode, empty));

    private Task<object?> CreateEmptyCdAsync(string vm, string userdevice) => CreateVbdAsync(vm, XType.NullRef, userdevice, "CD", "RO", empty: true);

    private async Task<string> NetworkAsync() => (await AllAsync("network"))[0];

    private async Task<object?> CreateVifAsync(string vm, string device, string mac = "")
    {
        var record = ApiSchema.Class("VIF").MinimalRecord();
        record["VM"] = vm;
        record["network"] = await NetworkAsync();
        record["device"] = device;
        record["MAC"] = mac;
        record["MTU"] = "1500";
        return await Client.InvokeAsync("VIF.create", record);
    }

    [Test]
    public async Task A_created_VM_is_halted_with_no_domain_its_own_metrics_and_a_MAC_seed_whatever_the_record_asks()
    {
        var vm = await CreateVmAsync("asks to be running", r =>
        {
            r["power_state"] = "Running";
            r["HVM_boot_policy"] = "BIOS order";
            r["memory_static_max"] = (1 * GiB).ToString(System.Globalization.CultureInfo.InvariantCulture);
            r["VCPUs_max"] = "1";
            r["HVM_shadow_multiplier"] = 1.0;
            r["blocked_operations"] = new Dictionary<string, object?> { ["start"] = "ignored" };
            r["last_booted_record"] = "ignored";
        });
        var record = await RecordAsync("VM", vm);
        var metrics = (string)record["metrics"]!;
        var otherConfig = (IReadOnlyDictionary<string, object?>)record["other_config"]!;
        Assert.Multiple(async () =>
        {
            Assert.That(record["power_state"], Is.EqualTo("Halted"));
            Assert.That(record["domid"], Is.EqualTo("-1"));
            Assert.That(record["resident_on"], Is.EqualTo(XType.NullRef));
            Assert.That(record["last_booted_record"], Is.EqualTo(""), "runtime state is kept only for a suspended VM");
            Assert.That((IReadOnlyDictionary<string, object?>)record["blocked_operations"]!, Is.Empty, "the argument is ignored, as on real hosts");
            Assert.That(Guid.TryParse((string?)otherConfig["mac_seed"], out _), Is.True, "a fresh mac_seed");
            Assert.That(record["domain_type"], Is.EqualTo("hvm"), "derived from the boot policy");
            Assert.That(record["memory_overhead"], Is.EqualTo((12L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)), "HVM, 1 GiB, 1 vCPU, multiplier 1");
            Assert.That(record["hardware_platform_version"], Is.EqualTo("2"), "has_vendor_device defaults to true");
            Assert.That(await AllAsync("VM_metrics"), Does.Contain(metrics));
            var m = await RecordAsync("VM_metrics", metrics);
            Assert.That(m["memory_actual"], Is.EqualTo("0"));
            Assert.That((IReadOnlyDictionary<string, object?>)m["VCPUs_utilisation"]!, Is.EquivalentTo(new Dictionary<string, object?> { ["0"] = 0.0 }));
            Assert.That(m["current_domain_type"], Is.EqualTo("unspecified"));
        });
    }

    [Test]
    public async Task A_given_MAC_seed_is_kept_and_a_VM_without_boot_policy_is_PV()
    {
        var vm = await CreateVmAsync("seeded", r => r["other_config"] = new Dictionary<string, object?> { ["mac_seed"] = "my seed" });
        var record = await RecordAsync("VM", vm);
        Assert.Multiple(() =>
        {
            Assert.That(((IReadOnlyDictionary<string, object?>)record["other_config"]!)["mac_seed"], Is.EqualTo("my seed"));
            Assert.That(record["domain_type"], Is.EqualTo("pv"));
        });
    }

    [Test]
    public async Task A_suspended_VM_record_without_its_suspend_image_is_refused_naming_a_ref_that_was_never_created()
    {
        var vms = await AllAsync("VM");
        var metrics = await AllAsync("VM_metrics");
        var error = await XenApiAssert.FailsAsync(() => CreateVmAsync("half suspended", r => r["power_state"] = "Suspended"), "VM_BAD_POWER_STATE");
        Assert.Multiple(async () =>
        {
            Assert.That(error.Parameters.Skip(1), Is.EqualTo(new[] { "halted", "suspended" }));
            Assert.That(error.Parameters[0], Does.StartWith("OpaqueRef:").And.Not.AnyOf(vms.ToArray()));
            Assert.That(await AllAsync("VM"), Is.EquivalentTo(vms));
            Assert.That(await AllAsync("VM_metrics"), Is.EquivalentTo(metrics), "nothing is left behind");
        });
    }

    [Test]
    public async Task A_complete_suspended_VM_record_is_stored_suspended_with_its_runtime_state()
    {
        var vdi = await CreateVdiAsync();
        var vm = await CreateVmAsync("suspended", r =>
        {
            r["power_state"] = "Suspended";
            r["suspend_VDI"] = vdi;
            r["last_booted_record"] = "booted";
            r["last_boot_CPU_flags"] = new Dictionary<string, object?> { ["vendor"] = "GenuineIntel" };
            r["domain_type"] = "hvm";
        });
        var record = await RecordAsync("VM", vm);
        Assert.Multiple(async () =>
        {
            Assert.That(record["power_state"], Is.EqualTo("Suspended"));
            Assert.That(record["suspend_VDI"], Is.EqualTo(vdi));
            Assert.That(record["last_booted_record"], Is.EqualTo("booted"));
            Assert.That((await RecordAsync("VM_metrics", (string)record["metrics"]!))["current_domain_type"], Is.EqualTo("hvm"));
        });
    }

    [Test]
    public async Task Numbers_as_strings_and_empty_references_as_nova_sends_them_are_accepted()
    {
        var vm = await CreateVmAsync("nova", r =>
        {
            r["affinity"] = "";
            r["user_version"] = "0";
            r["memory_static_max"] = "536870912";
            r["memory_target"] = "536870912";
            r["VCPUs_max"] = "2";
        });
        var record = await RecordAsync("VM", vm);
        Assert.Multiple(() =>
        {
            Assert.That(record["affinity"], Is.EqualTo(XType.NullRef));
            Assert.That(record["memory_static_max"], Is.EqualTo("536870912"));
            Assert.That(record["VCPUs_max"], Is.EqualTo("2"));
        });
    }

    [TestCase("Running", "running")]
    [TestCase("Paused", "paused")]
    public async Task A_VM_that_may_be_running_is_not_destroyed(string powerState, string actual)
    {
        var vm = await CreateVmAsync("live");
        await ForceAsync(vm, v => v.PowerState = VmPowerStateWire.Parse(powerState));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", vm), "VM_BAD_POWER_STATE", vm, "halted, suspended", actual);
        Assert.That(await AllAsync("VM"), Does.Contain(vm));
    }

    [Test]
    public async Task A_suspended_VM_is_destroyed_and_its_suspend_image_kept()
    {
        var vdi = await CreateVdiAsync();
        var vm = await CreateVmAsync("suspended", r =>
        {
            r["power_state"] = "Suspended";
            r["suspend_VDI"] = vdi;
            r["last_booted_record"] = "booted";
            r["last_boot_CPU_flags"] = new Dictionary<string, object?> { ["vendor"] = "GenuineIntel" };
        });
        await Client.InvokeAsync("VM.destroy", vm);
        Assert.Multiple(async () =>
        {
            Assert.That(await AllAsync("VM"), Does.Not.Contain(vm));
            Assert.That(await AllAsync("VDI"), Does.Contain(vdi));
        });
    }

    [Test]
    public async Task A_default_template_is_not_destroyed()
    {
        var template = await CreateVmAsync("default template", r =>
        {
            r["is_a_template"] = true;
            r["other_config"] = new Dictionary<string, object?> { ["default_template"] = "1" };
        });
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", template), "VM_IS_TEMPLATE", template, "destroy");

        // Only other_config says so, on a VM that is no template: the check inside destroy, with no parameters.
        var marked = await CreateVmAsync("marked", r => r["other_config"] = new Dictionary<string, object?> { ["default_template"] = "true" });
        var error = await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", marked), "VM_CANNOT_DELETE_DEFAULT_TEMPLATE");
        Assert.That(error.Parameters, Is.Empty);

        var ordinary = await CreateVmAsync("user template", r => r["is_a_template"] = true);
        await Client.InvokeAsync("VM.destroy", ordinary);
        Assert.That(await AllAsync("VM"), Does.Contain(template).And.Contain(marked).And.Not.Contain(ordinary));
    }

    [Test]
    public async Task Destroying_a_VM_takes_its_devices_and_metrics_with_it_and_keeps_its_disks_snapshots_and_children()
    {
        var grandparent = await CreateVmAsync("grandparent");
        var vm = await CreateVmAsync("doomed");
        var child = await CreateVmAsync("child");
        var snapshot = await CreateVmAsync("snapshot");
        var vdi = await CreateVdiAsync();
        var disk = (string)(await CreateVbdAsync(vm, vdi, "0"))!;
        var cd = (string)(await CreateEmptyCdAsync(vm, "3"))!;
        var vif = (string)(await CreateVifAsync(vm, "0"))!;
        var guestMetrics = (await Daemon.InsertAsync(ApiSchema.Class("VM_guest_metrics"))).Ref;
        await ForceAsync(vm, v =>
        {
            v.Parent = new VMRef(grandparent);
            v.GuestMetrics = new VMGuestMetricsRef(guestMetrics);
        });
        await ForceAsync(child, v => v.Parent = new VMRef(vm));
        await ForceAsync(snapshot, v =>
        {
            v.IsASnapshot = true;
            v.SnapshotOf = new VMRef(vm);
        });
        var vmMetrics = (string)(await RecordAsync("VM", vm))["metrics"]!;
        var vbdMetrics = new[] { (string)(await RecordAsync("VBD", disk))["metrics"]!, (string)(await RecordAsync("VBD", cd))["metrics"]! };
        var vifMetrics = (string)(await RecordAsync("VIF", vif))["metrics"]!;

        await Client.InvokeAsync("VM.destroy", vm);

        Assert.Multiple(async () =>
        {
            Assert.That(await AllAsync("VM"), Does.Not.Contain(vm).And.Contain(child).And.Contain(snapshot));
            Assert.That(await AllAsync("VBD"), Does.Not.Contain(disk).And.Not.Contain(cd));
            Assert.That(Stored("VBD_metrics"), Does.Not.Contain(vbdMetrics[0]).And.Not.Contain(vbdMetrics[1]));
            Assert.That(await AllAsync("VIF"), Does.Not.Contain(vif));
            Assert.That(Stored("VIF_metrics"), Does.Not.Contain(vifMetrics));
            Assert.That(await AllAsync("VM_metrics"), Does.Not.Contain(vmMetrics));
            Assert.That(await AllAsync("VM_guest_metrics"), Does.Not.Contain(guestMetrics));
            Assert.That(await AllAsync("VDI"), Does.Contain(vdi), "disks outlive their VM");
            Assert.That((await RecordAsync("VM", child))["parent"], Is.EqualTo(grandparent), "the child takes the destroyed VM's parent");
            Assert.That((await RecordAsync("VM", snapshot))["is_a_snapshot"], Is.True);
        });
    }

    [Test]
    public async Task An_autodetected_VBD_takes_the_first_free_device_and_the_allowed_list_leaves_out_every_taken_name()
    {
        var vm = await CreateVmAsync("pv");
        await CreateEmptyCdAsync(vm, "xvdb");
        var first = (string)(await CreateVbdAsync(vm, await CreateVdiAsync(), "autodetect"))!;
        var second = (string)(await CreateVbdAsync(vm, await CreateVdiAsync(), "autodetect"))!;
        var allowed = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_allowed_VBD_devices", vm))!;
        Assert.Multiple(async () =>
        {
            Assert.That((await RecordAsync("VBD", first))["userdevice"], Is.EqualTo("0"));
            Assert.That((await RecordAsync("VBD", second))["userdevice"], Is.EqualTo("2"), "xvdb is device 1");
            Assert.That(allowed, Has.Count.EqualTo(255 - 3));
            Assert.That(allowed.Take(3), Is.EqualTo(new[] { "3", "4", "5" }));
            Assert.That(allowed[^1], Is.EqualTo("254"));
        });
    }

    [Test]
    public async Task A_VBD_device_another_VBD_of_the_VM_already_names_is_refused_under_any_spelling()
    {
        var vm = await CreateVmAsync("hvm", r => r["HVM_boot_policy"] = "BIOS order");
        await CreateEmptyCdAsync(vm, "0");
        await XenApiAssert.FailsAsync(() => CreateEmptyCdAsync(vm, "0"), "DEVICE_ALREADY_EXISTS", "0");
        await XenApiAssert.FailsAsync(() => CreateEmptyCdAsync(vm, "hda"), "DEVICE_ALREADY_EXISTS", "hda");
        await XenApiAssert.FailsAsync(() => CreateEmptyCdAsync(vm, "xvda"), "DEVICE_ALREADY_EXISTS", "xvda");
        // The same numbers on another VM are free.
        var other = await CreateVmAsync("other");
        await CreateEmptyCdAsync(other, "xvda");
        var allowed = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_allowed_VBD_devices", vm))!;
        Assert.That(allowed[0], Is.EqualTo("1"));
    }

    [Test]
    public async Task VBD_create_checks_the_disk_type_then_CD_rules_then_read_only_disks_in_the_real_order()
    {
        var vm = await CreateVmAsync("checks");
        var statefile = await CreateVdiAsync();
        Daemon.Database.Write(tx => tx.Update(new VDIRef(statefile), v => v.Type = VdiType.HaStatefile));
        await Daemon.SettledAsync();
        var readOnly = await CreateVdiAsync(readOnly: true);
        var before = await AllAsync("VBD");

        // A read-write CD of a host disk: the disk's type is checked first.
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, statefile, "1", "CD", "RW"), "VDI_INCOMPATIBLE_TYPE", statefile, "HA statefile");
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, XType.NullRef, "1", "CD", "RW", empty: true), "VBD_CDS_MUST_BE_READONLY");
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, XType.NullRef, "1", "Disk", "RO", empty: true), "VBD_NOT_REMOVABLE_MEDIA", "in constructor");
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, readOnly, "1"), "VDI_READONLY", readOnly);
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, readOnly, "not a device", mode: "RO"), "INVALID_DEVICE", "not a device");
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, readOnly, "autodetect", "Floppy", "RO"),
            "NOT_IMPLEMENTED", "VBD of type 'floppy' is not supported on PV domain");
        Assert.That(await AllAsync("VBD"), Is.EquivalentTo(before), "nothing was created");

        // Real hosts mean to limit numbers to 0-15, but any integer passes their check.
        await CreateVbdAsync(vm, readOnly, "99", mode: "RO");
    }

    [Test]
    public async Task A_VBD_made_for_a_halted_VM_is_detached_with_metrics_which_destroy_removes_and_an_attached_one_is_kept()
    {
        var vm = await CreateVmAsync("halted");
        var record = VbdRecord(vm, await CreateVdiAsync(), "0");
        record["device"] = "xvda";
        record["currently_attached"] = true;
        var vbd = (string)(await Client.InvokeAsync("VBD.create", record))!;
        var created = await RecordAsync("VBD", vbd);
        var metrics = (string)created["metrics"]!;
        Assert.Multiple(async () =>
        {
            Assert.That(created["device"], Is.EqualTo(""));
            Assert.That(created["currently_attached"], Is.False);
            Assert.That(Stored("VBD_metrics"), Does.Contain(metrics));
        });
        await Client.InvokeAsync("VBD.destroy", vbd);
        Assert.That(Stored("VBD_metrics"), Does.Not.Contain(metrics));

        var attached = (string)(await CreateEmptyCdAsync(vm, "3"))!;
        Daemon.Database.Write(tx => tx.Update(new VBDRef(attached), v => v.CurrentlyAttached = true));
        await Daemon.SettledAsync();
        var vmUuid = (string)(await RecordAsync("VM", vm))["uuid"]!;
        var vbdUuid = (string)(await RecordAsync("VBD", attached))["uuid"]!;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.destroy", attached), "OPERATION_NOT_ALLOWED", $"VBD '{vbdUuid}' still attached to '{vmUuid}'");
    }

    [Test]
    public async Task No_VBD_is_created_for_a_VM_being_migrated()
    {
        var vm = await CreateVmAsync("migrating");
        const string task = "OpaqueRef:22222222-3333-4444-5555-666666666666";
        using (Daemon.Service<OperationGuard>().Begin(ApiSchema.Class("VM"), vm, "migrate_send", task))
        {
            await Daemon.SettledAsync();
            await XenApiAssert.FailsAsync(() => CreateEmptyCdAsync(vm, "3"), "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "migrate_send", task);
        }
    }

    [Test]
    public async Task VBDs_and_VIFs_naming_a_VM_disk_or_network_that_does_not_exist_are_refused_and_nothing_is_created()
    {
        var vm = await CreateVmAsync("references");
        var vdi = await CreateVdiAsync();
        var unknown = $"OpaqueRef:{Guid.NewGuid()}";
        var vbds = (await AllAsync("VBD")).Count;
        var vifs = (await AllAsync("VIF")).Count;
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(unknown, vdi, "0"), "HANDLE_INVALID", "VM", unknown);
        await XenApiAssert.FailsAsync(() => CreateVbdAsync(vm, unknown, "0"), "HANDLE_INVALID", "VDI", unknown);
        await XenApiAssert.FailsAsync(() => CreateVifAsync(unknown, "0", "02:00:00:00:00:01"), "HANDLE_INVALID", "VM", unknown);
        var record = ApiSchema.Class("VIF").MinimalRecord();
        record["VM"] = vm;
        record["network"] = unknown;
        record["device"] = "0";
        record["MAC"] = "";
        record["MTU"] = "1500";
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.create", record), "HANDLE_INVALID", "network", unknown);
        Assert.That((await AllAsync("VBD")).Count, Is.EqualTo(vbds));
        Assert.That((await AllAsync("VIF")).Count, Is.EqualTo(vifs));
    }

    [Test]
    public async Task A_VIF_without_a_MAC_gets_the_one_the_VM_seed_derives_for_its_device()
    {
        const string seed = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        var vm = await CreateVmAsync("seeded", r => r["other_config"] = new Dictionary<string, object?> { ["mac_seed"] = seed });
        var first = await RecordAsync("VIF", (string)(await CreateVifAsync(vm, "0"))!);
        var second = await RecordAsync("VIF", (string)(await CreateVifAsync(vm, "1"))!);
        var eighth = await RecordAsync("VIF", (string)(await CreateVifAsync(vm, "7"))!);
        var given = await RecordAsync("VIF", (string)(await CreateVifAsync(vm, "2", "AA:bb:cc:dd:ee:ff"))!);
        Assert.Multiple(async () =>
        {
            // Computed by the real server's algorithm (MD5 chained 2·device+1 times) independently of the daemon.
            Assert.That(first["MAC"], Is.EqualTo("7e:29:ed:6c:74:0e"));
            Assert.That(second["MAC"], Is.EqualTo("2a:0a:ee:30:a3:9f"));
            Assert.That(eighth["MAC"], Is.EqualTo("f2:05:29:76:b3:30"));
            Assert.That(first["MAC_autogenerated"], Is.True);
            Assert.That(given["MAC"], Is.EqualTo("AA:bb:cc:dd:ee:ff"));
            Assert.That(given["MAC_autogenerated"], Is.False);
            Assert.That(Stored("VIF_metrics"), Does.Contain((string)first["metrics"]!));
            Assert.That(first["ipv4_configuration_mode"], Is.EqualTo("None"));
        });
    }

    [Test]
    public async Task A_bad_MAC_or_device_or_a_device_the_VM_already_has_is_refused()
    {
        var vm = await CreateVmAsync("vifs");
        await CreateVifAsync(vm, "1");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "2", "00:11:22:33:44"), "MAC_INVALID", "00:11:22:33:44");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "2", "00:11:22:33:44:zz"), "MAC_INVALID", "00:11:22:33:44:zz");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "eth0"), "INVALID_DEVICE", "eth0");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "-1"), "INVALID_DEVICE", "-1");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "01"), "DEVICE_ALREADY_EXISTS", "01");
        // Hashing 2·device+1 times is bounded.
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "4000000000"), "INVALID_DEVICE", "4000000000");
        await CreateVifAsync(vm, "4000000000", "00:11:22:33:44:55");

        await Client.InvokeAsync("VM.remove_from_other_config", vm, "mac_seed");
        await XenApiAssert.FailsAsync(() => CreateVifAsync(vm, "3"), "MAC_INVALID", "");
    }

    [Test]
    public async Task The_allowed_VIF_devices_are_0_to_15_without_those_in_use()
    {
        var vm = await CreateVmAsync("network devices");
        await CreateVifAsync(vm, "0");
        await CreateVifAsync(vm, "3");
        var allowed = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_allowed_VIF_devices", vm))!;
        Assert.That(allowed, Is.EqualTo(new[] { "1", "2", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15" }));
    }

    [Test]
    public async Task A_VIF_attached_to_a_running_VM_is_not_destroyed_and_a_detached_one_goes_with_its_metrics()
    {
        var vm = await CreateVmAsync("running");
        var attached = (string)(await CreateVifAsync(vm, "0"))!;
        var detached = (string)(await CreateVifAsync(vm, "1"))!;
        var metrics = (string)(await RecordAsync("VIF", detached))["metrics"]!;
        await ForceAsync(vm, v =>
        {
            v.PowerState = VmPowerState.Running;
            v.Domid = 5;
        });
        Daemon.Database.Write(tx => tx.Update(new VIFRef(attached), v => v.CurrentlyAttached = true));
        await Daemon.SettledAsync();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VIF.destroy", attached), "OPERATION_NOT_ALLOWED", "VIF currently attached to a running VM");
        await Client.InvokeAsync("VIF.destroy", detached);
        Assert.That(Stored("VIF_metrics"), Does.Not.Contain(metrics));
    }
}
