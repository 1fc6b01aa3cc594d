using Xapi.Model;
using Xapi.Protocol;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The VM setters, memory and vCPU messages over the wire on the simulator: each refusal with the
/// real server's exact parameters (halted and running), what each keeps in step, and the live
/// changes as the backend and the database show them.
/// </summary>
public class VmSetterTests() : SimulatedHostFixture()
{
    private const long MiB = 1L << 20;
    private const string VcpuRule = "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max";

    private async Task<object?> FieldAsync(string vm, string field) => (await RecordAsync("VM", vm))[field];

    private async Task<long> LongAsync(string vm, string field) => Convert.ToInt64(await FieldAsync(vm, field));

    private async Task<string> VmAsync(string name, Action<Dictionary<string, object?>>? edit = null)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        record["memory_static_min"] = (128 * MiB).ToString();
        record["memory_dynamic_min"] = (256 * MiB).ToString();
        record["memory_dynamic_max"] = (256 * MiB).ToString();
        record["memory_static_max"] = (512 * MiB).ToString();
        record["VCPUs_max"] = "2";
        record["VCPUs_at_startup"] = "1";
        record["platform"] = new Dictionary<string, object?> { ["vcpu-unrestricted"] = "true" };
        edit?.Invoke(record);
        return (string)(await Client.InvokeAsync("VM.create", record))!;
    }

    private async Task<string> StartedAsync(string name, Action<Dictionary<string, object?>>? edit = null)
    {
        var vm = await VmAsync(name, edit);
        await Client.InvokeAsync("VM.start", vm, false, false);
        return vm;
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

    private async Task<long> FreeMemoryAsync() => Convert.ToInt64(await Client.InvokeAsync("host.compute_free_memory", await HostAsync()));

    [Test]
    public async Task VCPU_setters_refuse_counts_out_of_order_and_VCPUs_max_waits_for_a_halted_VM()
    {
        var vm = await VmAsync("vcpus");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_max", vm, 0L), "INVALID_VALUE", VcpuRule, "0");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_at_startup", vm, 3L), "INVALID_VALUE", VcpuRule, "3");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_at_startup", vm, 0L), "INVALID_VALUE", VcpuRule, "0");
        var overhead = await LongAsync(vm, "memory_overhead");

        await Client.InvokeAsync("VM.set_VCPUs_max", vm, 8L);
        Assert.That(await LongAsync(vm, "VCPUs_max"), Is.EqualTo(8));
        Assert.That(await LongAsync(vm, "memory_overhead"), Is.GreaterThan(overhead), "more vCPUs cost more shadow memory");
        await Client.InvokeAsync("VM.set_VCPUs_at_startup", vm, 4L);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_max", vm, 3L), "INVALID_VALUE", VcpuRule, "3");

        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_max", vm, 6L), "VM_BAD_POWER_STATE", vm, "halted", "running");
        // Real hosts let VCPUs_at_startup change on a running VM (for its next boot).
        await Client.InvokeAsync("VM.set_VCPUs_at_startup", vm, 2L);
        Assert.That(await LongAsync(vm, "VCPUs_at_startup"), Is.EqualTo(2));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Memory_limits_must_be_ordered_set_the_target_to_dynamic_min_and_need_a_halted_VM()
    {
        var vm = await VmAsync("limits");
        var disorder = await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_limits", vm, 256 * MiB, 128 * MiB, 128 * MiB, 128 * MiB),
            "MEMORY_CONSTRAINT_VIOLATION_ORDER");
        Assert.That(disorder.Parameters, Is.Empty);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_static_max", vm, 200 * MiB), "MEMORY_CONSTRAINT_VIOLATION_ORDER");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_dynamic_min", vm, 300 * MiB), "MEMORY_CONSTRAINT_VIOLATION_ORDER");
        Assert.That(await LongAsync(vm, "memory_static_max"), Is.EqualTo(512 * MiB), "nothing written on refusal");

        await Client.InvokeAsync("VM.set_memory_limits", vm, 64 * MiB, 1024 * MiB, 384 * MiB, 768 * MiB);
        var record = await RecordAsync("VM", vm);
        Assert.That(Convert.ToInt64(record["memory_static_min"]), Is.EqualTo(64 * MiB));
        Assert.That(Convert.ToInt64(record["memory_dynamic_max"]), Is.EqualTo(768 * MiB));
        Assert.That(Convert.ToInt64(record["memory_target"]), Is.EqualTo(384 * MiB));
        Assert.That(Convert.ToInt64(record["memory_overhead"]), Is.EqualTo(Convert.ToInt64(await Client.InvokeAsync("VM.compute_memory_overhead", vm))));

        await Client.InvokeAsync("VM.set_memory", vm, 640 * MiB);
        record = await RecordAsync("VM", vm);
        Assert.That(new[] { record["memory_static_max"], record["memory_dynamic_max"], record["memory_dynamic_min"] }.Select(Convert.ToInt64),
            Is.All.EqualTo(640 * MiB));
        Assert.That(Convert.ToInt64(record["memory_static_min"]), Is.EqualTo(64 * MiB));

        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_limits", vm, 64 * MiB, 640 * MiB, 640 * MiB, 640 * MiB),
            "VM_BAD_POWER_STATE", vm, "halted", "running");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_static_max", vm, 700 * MiB), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await Client.InvokeAsync("VM.pause", vm);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_dynamic_range", vm, 512 * MiB, 640 * MiB),
            "VM_BAD_POWER_STATE", vm, "halted, running", "paused");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Set_memory_target_live_is_a_no_op_that_only_a_running_VM_accepts()
    {
        var vm = await VmAsync("target live");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_target_live", vm, 200 * MiB), "VM_BAD_POWER_STATE", vm, "running", "halted");
        await Client.InvokeAsync("VM.start", vm, false, false);
        await Client.InvokeAsync("VM.set_memory_target_live", vm, 200 * MiB);
        Assert.That(await LongAsync(vm, "memory_target"), Is.EqualTo(256 * MiB));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_new_dynamic_range_on_a_running_VM_reaches_its_balloon_and_memory_target()
    {
        var vm = await StartedAsync("balloon", r => r["memory_dynamic_max"] = (512 * MiB).ToString());
        var uuid = Guid.Parse((string)(await FieldAsync(vm, "uuid"))!);
        Assert.That((await Simulator.TryGetDomainAsync(uuid))!.MemoryTarget, Is.GreaterThanOrEqualTo(256 * MiB));

        await Client.InvokeAsync("VM.set_memory_dynamic_range", vm, 192 * MiB, 192 * MiB);

        var record = await UntilAsync(vm, r => Convert.ToInt64(r["memory_target"]) == 192 * MiB);
        Assert.That(Convert.ToInt64(record["memory_dynamic_min"]), Is.EqualTo(192 * MiB));
        Assert.That(Convert.ToInt64(record["memory_dynamic_max"]), Is.EqualTo(192 * MiB));
        var domain = (await Simulator.TryGetDomainAsync(uuid))!;
        Assert.That(domain.DynamicMax, Is.EqualTo(192 * MiB));
        Assert.That(domain.MemoryTarget, Is.EqualTo(192 * MiB));

        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_dynamic_max", vm, 1024 * MiB), "MEMORY_CONSTRAINT_VIOLATION_ORDER");
        Assert.That((await Simulator.TryGetDomainAsync(uuid))!.DynamicMax, Is.EqualTo(192 * MiB), "a refused range never reaches the backend");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_running_VM_cannot_claim_more_than_the_host_has_and_is_told_in_KiB()
    {
        var vm = await StartedAsync("greedy", r => r["memory_static_max"] = (8L << 30).ToString());
        var free = await FreeMemoryAsync();
        var wanted = 6L << 30;

        // Real hosts report this one refusal in KiB: the increase of dynamic_min, and what is free.
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_dynamic_range", vm, wanted, wanted),
            "HOST_NOT_ENOUGH_FREE_MEMORY", ((wanted - (256 * MiB)) / 1024).ToString(), (free / 1024).ToString());
        Assert.That(await LongAsync(vm, "memory_dynamic_min"), Is.EqualTo(256 * MiB));
        Assert.That(await FreeMemoryAsync(), Is.EqualTo(free));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Set_VCPUs_number_live_changes_the_running_guest_and_its_next_boot()
    {
        var vm = await VmAsync("hotplug", r => r["VCPUs_max"] = "4");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_number_live", vm, 2L), "VM_BAD_POWER_STATE", vm, "running", "halted");
        await Client.InvokeAsync("VM.start", vm, false, false);
        var uuid = Guid.Parse((string)(await FieldAsync(vm, "uuid"))!);

        await Client.InvokeAsync("VM.set_VCPUs_number_live", vm, 3L);

        Assert.That(await LongAsync(vm, "VCPUs_at_startup"), Is.EqualTo(3));
        var metrics = await RecordAsync("VM_metrics", (string)(await FieldAsync(vm, "metrics"))!);
        Assert.That(Convert.ToInt64(metrics["VCPUs_number"]), Is.EqualTo(3));
        Assert.That((await Simulator.TryGetDomainAsync(uuid))!.VcpusOnline, Is.EqualTo(3));

        // Real hosts name VCPUs_max here, not the count asked for.
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_VCPUs_number_live", vm, 5L),
            "INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs \u2264 VCPUs_max", "4");
        Assert.That((await Simulator.TryGetDomainAsync(uuid))!.VcpusOnline, Is.EqualTo(3));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Free_memory_drops_by_a_started_VMs_footprint_and_comes_back_after_shutdown()
    {
        var host = await HostAsync();
        Assert.That(Convert.ToInt64(await Client.InvokeAsync("host.compute_memory_overhead", host)), Is.EqualTo(new SimulatorOptions().HostOverheadBytes));
        var before = await FreeMemoryAsync();
        var vm = await VmAsync("footprint");
        Assert.That(await FreeMemoryAsync(), Is.EqualTo(before), "a halted VM claims nothing");

        await Client.InvokeAsync("VM.start", vm, false, false);
        var overhead = await LongAsync(vm, "memory_overhead");
        Assert.That(overhead, Is.GreaterThan(0));
        Assert.That(await FreeMemoryAsync(), Is.EqualTo(before - (256 * MiB) - overhead));

        await Client.InvokeAsync("VM.hard_shutdown", vm);
        Assert.That(await FreeMemoryAsync(), Is.EqualTo(before));
    }

    [Test]
    public async Task Compute_memory_overhead_follows_the_real_servers_model()
    {
        // HVM, static_max 1 GiB, 1 vCPU, multiplier 1: 1 + 1 + 9 (shadow) + 1 (per-vCPU) MiB.
        var vm = await VmAsync("overhead", r =>
        {
            r["memory_static_max"] = r["memory_dynamic_max"] = (1L << 30).ToString();
            r["VCPUs_max"] = "1";
            r["HVM_shadow_multiplier"] = 1.0;
            r["domain_type"] = "hvm";
        });
        Assert.That(Convert.ToInt64(await Client.InvokeAsync("VM.compute_memory_overhead", vm)), Is.EqualTo(12 * MiB));
    }

    [Test]
    public async Task The_shadow_multiplier_must_be_at_least_one_and_changes_the_overhead_of_a_halted_VM()
    {
        var vm = await VmAsync("shadow");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_HVM_shadow_multiplier", vm, 0.5), "INVALID_VALUE", "multiplier", "0.5");
        var overhead = await LongAsync(vm, "memory_overhead");
        await Client.InvokeAsync("VM.set_HVM_shadow_multiplier", vm, 4.0);
        Assert.That(await LongAsync(vm, "memory_overhead"), Is.GreaterThan(overhead));
        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_HVM_shadow_multiplier", vm, 2.0), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Domain_type_and_boot_policy_keep_each_other_in_step()
    {
        var vm = await VmAsync("domain type");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_domain_type", vm, "unspecified"), "INVALID_VALUE", "domain_type", "unspecified");
        await Client.InvokeAsync("VM.set_domain_type", vm, "hvm");
        Assert.That(await FieldAsync(vm, "HVM_boot_policy"), Is.EqualTo("BIOS order"));
        await Client.InvokeAsync("VM.set_HVM_boot_policy", vm, "");
        Assert.That(await FieldAsync(vm, "domain_type"), Is.EqualTo("pv"));
        await Client.InvokeAsync("VM.set_domain_type", vm, "pvh");
        Assert.That(await FieldAsync(vm, "HVM_boot_policy"), Is.EqualTo(""));
    }

    [Test]
    public async Task Delays_and_order_must_not_be_negative()
    {
        var vm = await VmAsync("delays");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_start_delay", vm, -1L), "INVALID_VALUE", "start_delay must be non-negative", "-1");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_shutdown_delay", vm, -2L), "INVALID_VALUE", "shutdown_delay must be non-negative", "-2");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_order", vm, -3L), "INVALID_VALUE", "order must be non-negative", "-3");
        await Client.InvokeAsync("VM.set_order", vm, 5L);
        Assert.That(await LongAsync(vm, "order"), Is.EqualTo(5));
    }

    [Test]
    public async Task HA_priority_takes_only_its_three_values_and_always_run_maps_onto_it()
    {
        var vm = await VmAsync("ha");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_ha_restart_priority", vm, "always"), "INVALID_VALUE", "ha_restart_priority", "always");
        await Client.InvokeAsync("VM.set_ha_always_run", vm, true);
        Assert.That(await FieldAsync(vm, "ha_restart_priority"), Is.EqualTo("restart"));
        Assert.That(await FieldAsync(vm, "ha_always_run"), Is.False, "a halted VM is not protected until it runs");
        await Client.InvokeAsync("VM.start", vm, false, false);
        await Client.InvokeAsync("VM.set_ha_restart_priority", vm, "best-effort");
        await Client.InvokeAsync("VM.set_ha_always_run", vm, true);
        Assert.That(await FieldAsync(vm, "ha_always_run"), Is.True);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task The_vendor_device_NVRAM_and_suspend_image_change_only_in_their_power_state()
    {
        var vm = await VmAsync("halted only");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_suspend_VDI", vm, XType.NullRef), "VM_BAD_POWER_STATE", vm, "suspended", "halted");
        await Client.InvokeAsync("VM.set_has_vendor_device", vm, true);
        Assert.That(await LongAsync(vm, "hardware_platform_version"), Is.EqualTo(2));
        await Client.InvokeAsync("VM.add_to_NVRAM", vm, "EFI-variables", "AAAA");

        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_has_vendor_device", vm, false), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_NVRAM", vm, new Dictionary<string, object?>()), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.remove_from_NVRAM", vm, "EFI-variables"), "VM_BAD_POWER_STATE", vm, "halted", "running");
        Assert.That((IReadOnlyDictionary<string, object?>)(await FieldAsync(vm, "NVRAM"))!, Does.ContainKey("EFI-variables"));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Blocking_an_operation_takes_it_out_of_allowed_operations_at_once()
    {
        var vm = await VmAsync("blocked");
        Assert.That((IReadOnlyList<object?>)(await FieldAsync(vm, "allowed_operations"))!, Does.Contain("start"));
        await Client.InvokeAsync("VM.add_to_blocked_operations", vm, "start", "maintenance");
        Assert.That((IReadOnlyList<object?>)(await FieldAsync(vm, "allowed_operations"))!, Does.Not.Contain("start"));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "OPERATION_BLOCKED", vm, "maintenance");
        await Client.InvokeAsync("VM.remove_from_blocked_operations", vm, "start");
        Assert.That((IReadOnlyList<object?>)(await FieldAsync(vm, "allowed_operations"))!, Does.Contain("start"));
        await Client.InvokeAsync("VM.set_blocked_operations", vm, new Dictionary<string, object?> { ["start_on"] = "no" });
        Assert.That((IReadOnlyList<object?>)(await FieldAsync(vm, "allowed_operations"))!, Does.Contain("start").And.Not.Contain("start_on"));
    }

    [Test]
    public async Task Templates_join_no_appliance_or_group_and_no_snapshot_schedule()
    {
        var template = await VmAsync("template", r => r["is_a_template"] = true);
        var appliance = ApiSchema.Class("VM_appliance").MinimalRecord();
        appliance["name_label"] = "app";
        var app = (string)(await Client.InvokeAsync("VM_appliance.create", appliance))!;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_appliance", template, app),
            "OPERATION_NOT_ALLOWED", "Control domains, templates and snapshots cannot be assigned to appliances.");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_groups", template, Array.Empty<object?>()),
            "OPERATION_NOT_ALLOWED", "Control domains, templates, and snapshots cannot be added to VM groups.");
        var schedule = ApiSchema.Class("VMSS").MinimalRecord();
        schedule["name_label"] = "nightly";
        schedule["type"] = "snapshot";
        schedule["frequency"] = "daily";
        var vmss = (string)(await Client.InvokeAsync("VMSS.create", schedule))!;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_snapshot_schedule", template, vmss), "VM_IS_TEMPLATE", template);

        var vm = await VmAsync("member");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_snapshot_schedule", vm, "OpaqueRef:nonexistent"), "INVALID_VALUE", "OpaqueRef:nonexistent");
        await Client.InvokeAsync("VM.set_appliance", vm, app);
        Assert.That(await FieldAsync(vm, "appliance"), Is.EqualTo(app));
        var group = ApiSchema.Class("VM_group").MinimalRecord();
        group["name_label"] = "g";
        group["placement"] = "normal";
        var g1 = (string)(await Client.InvokeAsync("VM_group.create", group))!;
        var g2 = (string)(await Client.InvokeAsync("VM_group.create", group))!;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_groups", vm, new object?[] { g1, g2 }), "TOO_MANY_GROUPS");
    }

    [Test]
    public async Task BIOS_strings_are_validated_merged_over_the_generic_ones_and_set_once()
    {
        var vm = await VmAsync("bios");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_bios_strings", vm, new Dictionary<string, object?> { ["oem-1"] = "x" }),
            "INVALID_VALUE", "oem-1", "Unknown key");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_bios_strings", vm, new Dictionary<string, object?> { ["bios-vendor"] = "" }),
            "INVALID_VALUE", "bios-vendor", "Value provided is empty");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_bios_strings", vm, new Dictionary<string, object?> { ["bios-vendor"] = "a\tb" }),
            "INVALID_VALUE", "bios-vendor", "a\tb has non-printable ASCII characters");

        await Client.InvokeAsync("VM.set_bios_strings", vm, new Dictionary<string, object?> { ["bios-vendor"] = "Acme" });
        var strings = (IReadOnlyDictionary<string, object?>)(await FieldAsync(vm, "bios_strings"))!;
        Assert.That(strings["bios-vendor"], Is.EqualTo("Acme"));
        Assert.That(strings["system-product-name"], Is.EqualTo("HVM domU"));
        Assert.That(strings["oem-1"], Is.EqualTo("Xen"));
        var again = await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_bios_strings", vm, new Dictionary<string, object?> { ["bios-vendor"] = "B" }),
            "VM_BIOS_STRINGS_ALREADY_SET");
        Assert.That(again.Parameters, Is.Empty);
    }

    [Test]
    public async Task Boot_record_and_data_sources_need_a_domain()
    {
        var vm = await VmAsync("stats");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.get_boot_record", vm), "VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.query_data_source", vm, "memory"), "VM_BAD_POWER_STATE", vm, "running;paused", "halted");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.get_data_sources", vm), "VM_BAD_POWER_STATE", vm, "running", "halted");

        await Client.InvokeAsync("VM.start", vm, false, false);
        var boot = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("VM.get_boot_record", vm))!;
        Assert.That(boot["name_label"], Is.EqualTo("stats"));
        Assert.That(boot["power_state"], Is.EqualTo("Running"));
        Assert.That(Convert.ToDouble(await Client.InvokeAsync("VM.query_data_source", vm, "memory_target")), Is.EqualTo(256.0 * MiB));
        var sources = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_data_sources", vm))!;
        Assert.That(sources.Select(s => ((IReadOnlyDictionary<string, object?>)s!)["name_label"]), Does.Contain("memory"));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }
}
