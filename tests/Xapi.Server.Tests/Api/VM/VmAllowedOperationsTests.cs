using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The per-power-state rules of VM operations, as real hosts answer VM.assert_operation_valid
/// and list VM.allowed_operations (xapi_vm_lifecycle.ml; /work/notes/vm-facts.md §2).
/// </summary>
public class VmAllowedOperationsTests() : LoggedInFixture(RpcDialect.XmlRpc)
{
    // Each operation's allowed power states as VM_BAD_POWER_STATE spells them; null: any state.
    private static readonly Dictionary<string, string?> Expected = new()
    {
        ["start"] = "halted", ["start_on"] = "halted", ["provision"] = "halted", ["make_into_template"] = "halted",
        ["changing_shadow_memory"] = "halted", ["changing_NVRAM"] = "halted", ["create_vtpm"] = "halted",
        ["changing_VCPUs"] = "halted", ["changing_static_range"] = "halted", ["changing_memory_limits"] = "halted",
        ["unpause"] = "paused",
        ["resume"] = "suspended", ["resume_on"] = "suspended", ["csvm"] = "suspended",
        ["clean_shutdown"] = "running", ["clean_reboot"] = "running", ["pause"] = "running", ["suspend"] = "running",
        ["snapshot_with_quiesce"] = "running", ["pool_migrate"] = "running", ["send_sysrq"] = "running", ["send_trigger"] = "running",
        ["call_plugin"] = "running", ["data_source_op"] = "running", ["changing_memory_live"] = "running",
        ["awaiting_memory_live"] = "running", ["changing_shadow_memory_live"] = "running", ["changing_VCPUs_live"] = "running",
        ["sysprep"] = "running",
        ["changing_dynamic_range"] = "halted, running",
        ["clone"] = "halted", ["copy"] = "halted",
        ["destroy"] = "halted, suspended", ["export"] = "halted, suspended", ["create_template"] = "halted, suspended",
        ["hard_reboot"] = "paused, running",
        ["checkpoint"] = "paused, suspended, running", ["get_boot_record"] = "paused, suspended, running",
        ["shutdown"] = "paused, suspended, running", ["hard_shutdown"] = "paused, suspended, running",
        ["migrate_send"] = "halted, suspended, running",
        ["snapshot"] = null, ["revert"] = null, ["reverting"] = null, ["power_state_reset"] = null, ["assert_operation_valid"] = null,
        ["update_allowed_operations"] = null, ["metadata_export"] = null, ["query_services"] = null,
        ["import"] = "",
    };

    private static readonly VmPowerState[] States = [VmPowerState.Halted, VmPowerState.Paused, VmPowerState.Suspended, VmPowerState.Running];

    private readonly Dictionary<VmPowerState, string> _vms = [];

    private OperationKit _kit = null!;

    [OneTimeSetUp]
    public async Task CreateVmsAsync()
    {
        _kit = new OperationKit(Daemon);
        foreach (var state in States)
        {
            _vms[state] = await _kit.VmAsync(state);
        }
    }

    public static IEnumerable<TestCaseData> EveryOperationInEveryState() =>
        from state in States
        from op in ApiSchema.Class("VM").OperationsEnum!.Values
        select new TestCaseData(state, op).SetName($"Operation {op} on a {state} VM is allowed or refused by its power state");

    [TestCaseSource(nameof(EveryOperationInEveryState))]
    public async Task An_operation_is_allowed_or_refused_by_the_power_state_table(VmPowerState state, string op)
    {
        Assert.That(Expected.ContainsKey(op), $"the test's table lacks {op}");
        var vm = _vms[state];
        var actual = state.ToString().ToLowerInvariant();
        var expected = Expected[op];
        if (expected is not null && !expected.Split(", ").Contains(actual))
        {
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, op), "VM_BAD_POWER_STATE", vm, expected, actual);
            return;
        }
        // Past the power state, an ordinary running PV VM meets only these refusals.
        Func<Task> call = () => Client.InvokeAsync("VM.assert_operation_valid", vm, op);
        switch (op)
        {
            case "provision":
                await XenApiAssert.FailsAsync(call, "PROVISION_ONLY_ALLOWED_ON_TEMPLATE");
                break;
            case "revert":
                await XenApiAssert.FailsAsync(call, "REVERT_ONLY_ALLOWED_ON_SNAPSHOT");
                break;
            case "snapshot_with_quiesce":
                await XenApiAssert.FailsAsync(call, "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", vm);
                break;
            case "query_services":
                await XenApiAssert.FailsAsync(call, "NOT_SYSTEM_DOMAIN", vm);
                break;
            default:
                await call();
                break;
        }
    }

    [Test]
    public async Task Destroying_a_running_or_paused_VM_is_refused_with_its_power_state()
    {
        var running = await _kit.VmAsync(VmPowerState.Running);
        var paused = await _kit.VmAsync(VmPowerState.Paused);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", running), "VM_BAD_POWER_STATE", running, "halted, suspended", "running");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", paused), "VM_BAD_POWER_STATE", paused, "halted, suspended", "paused");
        Assert.That(await Client.InvokeAsync("VM.get_power_state", running), Is.EqualTo("Running"));
    }

    [Test]
    public async Task Hard_shutdown_of_a_halted_VM_names_every_state_it_could_start_from()
    {
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", _vms[VmPowerState.Halted], "hard_shutdown"),
            "VM_BAD_POWER_STATE", _vms[VmPowerState.Halted], "paused, suspended, running", "halted");
    }

    private static readonly string[] HaltedList =
    [
        "snapshot", "clone", "copy", "start", "start_on", "migrate_send", "changing_dynamic_range", "changing_static_range",
        "changing_shadow_memory", "changing_NVRAM", "make_into_template", "export", "metadata_export", "destroy", "create_vtpm",
    ];

    private static readonly string[] RunningPvList =
    [
        "snapshot", "checkpoint", "pause", "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot", "suspend", "pool_migrate",
        "migrate_send", "changing_dynamic_range", "changing_VCPUs_live", "metadata_export", "sysprep",
    ];

    private static readonly string[] RunningHvmList =
        ["snapshot", "pause", "hard_shutdown", "hard_reboot", "changing_dynamic_range", "metadata_export", "sysprep"];

    private static readonly string[] SuspendedList =
        ["snapshot", "checkpoint", "hard_shutdown", "resume", "resume_on", "migrate_send", "export", "metadata_export", "destroy"];

    private static readonly string[] TemplateList =
    [
        "clone", "copy", "provision", "changing_dynamic_range", "changing_static_range", "changing_shadow_memory", "changing_NVRAM",
        "export", "metadata_export",
    ];

    // Listed as real hosts store them: in reverse datamodel order.
    private static string[] Stored(IEnumerable<string> enumOrder) => enumOrder.Reverse().ToArray();

    private static IEnumerable<string> Without(IEnumerable<string> list, params string[] ops) => list.Where(o => !ops.Contains(o));

    public static IEnumerable<TestCaseData> StoredLists()
    {
        yield return new TestCaseData(VmPowerState.Halted, DomainType.Pv, false, HaltedList).SetName("A halted VM lists what a halted VM may do");
        yield return new TestCaseData(VmPowerState.Running, DomainType.Pv, false, RunningPvList).SetName("A running PV VM lists the power operations its guest supports");
        yield return new TestCaseData(VmPowerState.Running, DomainType.Hvm, true, RunningPvList).SetName("A running HVM VM with PV drivers lists what a PV VM lists");
        yield return new TestCaseData(VmPowerState.Running, DomainType.Hvm, false, RunningHvmList).SetName("A running HVM VM without drivers lists no operation that needs its guest's help");
        yield return new TestCaseData(VmPowerState.Paused, DomainType.Pv, false, new[] { "snapshot", "checkpoint", "unpause", "hard_shutdown", "hard_reboot", "metadata_export" })
            .SetName("A paused PV VM lists checkpoint");
        yield return new TestCaseData(VmPowerState.Paused, DomainType.Hvm, false, new[] { "snapshot", "unpause", "hard_shutdown", "hard_reboot", "metadata_export" })
            .SetName("A paused HVM VM without drivers does not list checkpoint");
        yield return new TestCaseData(VmPowerState.Suspended, DomainType.Pv, false, SuspendedList).SetName("A suspended VM lists what a suspended VM may do");
    }

    [TestCaseSource(nameof(StoredLists))]
    public async Task Allowed_operations_list_what_the_power_state_allows(VmPowerState state, DomainType type, bool pvDrivers, string[] enumOrder)
    {
        var vm = await _kit.VmAsync(state, type, guest: pvDrivers
            ? g => g.PVDriversVersion = ValueMap.FromPairs([new("major", "9"), new("minor", "1")])
            : null);
        Assert.That(await OperationKit.AllowedAsync(Client, "VM", vm), Is.EqualTo(Stored(enumOrder)));
    }

    [Test]
    public async Task A_template_lists_what_templates_may_do_and_a_default_template_cannot_be_destroyed()
    {
        var custom = await _kit.VmAsync(VmPowerState.Halted, edit: v => v.IsATemplate = true);
        var shipped = await _kit.VmAsync(VmPowerState.Halted, edit: v =>
        {
            v.IsATemplate = true;
            v.OtherConfig = ValueMap.FromPairs([new("default_template", "true")]);
        });
        Assert.Multiple(async () =>
        {
            var customList = TemplateList.Concat(["migrate_send", "destroy"]).OrderBy(o => Array.IndexOf(HaltedOrder, o));
            Assert.That(await OperationKit.AllowedAsync(Client, "VM", custom), Is.EqualTo(Stored(customList)));
            Assert.That(await OperationKit.AllowedAsync(Client, "VM", shipped), Is.EqualTo(Stored(TemplateList)));
        });
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", shipped), "VM_IS_TEMPLATE", shipped, "destroy");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", custom, "start"), "VM_IS_TEMPLATE", custom, "start");
        await Client.InvokeAsync("VM.destroy", custom);
    }

    private static readonly string[] HaltedOrder = ApiSchema.Class("VM").OperationsEnum!.Values.ToArray();

    [Test]
    public async Task A_running_template_is_refused_for_its_power_state_before_being_a_template()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running, edit: v => v.IsATemplate = true);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "start"), "VM_BAD_POWER_STATE", vm, "halted", "running");
    }

    [Test]
    public async Task A_blocked_operation_is_refused_as_blocked_before_its_power_state()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running, edit: v => v.BlockedOperations = ValueMap.FromPairs([new("start", "no")]));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "start"), "OPERATION_BLOCKED", vm, "no");
        Assert.That(await OperationKit.AllowedAsync(Client, "VM", vm), Does.Contain("pause"));
    }

    [Test]
    public async Task An_operation_in_progress_is_reported_before_the_VM_being_a_template()
    {
        var vm = await _kit.VmAsync(VmPowerState.Halted, edit: v => v.IsATemplate = true);
        const string task = "OpaqueRef:00000000-0000-0000-0000-00000000c10e";
        using (Daemon.Service<OperationGuard>().Begin(ApiSchema.Class("VM"), vm, "clone", task))
        {
            await Daemon.SettledAsync();
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "start"),
                "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clone", task);
            // Long copies run beside each other.
            await Client.InvokeAsync("VM.assert_operation_valid", vm, "copy");
        }
    }

    [Test]
    public async Task Several_operations_in_progress_are_reported_in_braces()
    {
        var vm = await _kit.VmAsync(VmPowerState.Halted);
        const string first = "OpaqueRef:00000000-0000-0000-0000-000000000001";
        const string second = "OpaqueRef:00000000-0000-0000-0000-000000000002";
        var guard = Daemon.Service<OperationGuard>();
        using (guard.Begin(ApiSchema.Class("VM"), vm, "clone", first))
        using (guard.Begin(ApiSchema.Class("VM"), vm, "export", second))
        {
            await Daemon.SettledAsync();
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", vm),
                "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "{clone,export}", $"{{{first},{second}}}");
        }
        await Client.InvokeAsync("VM.destroy", vm);
    }

    [Test]
    public async Task An_operation_in_progress_is_named_as_real_hosts_spell_it()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running);
        const string task = "OpaqueRef:00000000-0000-0000-0000-0000000000d5";
        using (Daemon.Service<OperationGuard>().Begin(ApiSchema.Class("VM"), vm, "data_source_op", task))
        {
            await Daemon.SettledAsync();
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "pause"),
                "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "data_sources_op", task);
        }
    }

    [Test]
    public async Task Hard_shutdown_may_run_beside_a_clean_shutdown_but_not_beside_another_hard_shutdown()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running);
        var guard = Daemon.Service<OperationGuard>();
        const string clean = "OpaqueRef:00000000-0000-0000-0000-0000000000c1";
        const string hard = "OpaqueRef:00000000-0000-0000-0000-0000000000c2";
        using (guard.Begin(ApiSchema.Class("VM"), vm, "clean_shutdown", clean))
        {
            await Daemon.SettledAsync();
            Assert.That(await OperationKit.AllowedAsync(Client, "VM", vm), Is.EqualTo(new[] { "hard_reboot", "hard_shutdown" }));
            using (guard.Begin(ApiSchema.Class("VM"), vm, "hard_shutdown", hard))
            {
                await Daemon.SettledAsync();
                await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "hard_shutdown"),
                    "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "{clean_shutdown,hard_shutdown}", $"{{{clean},{hard}}}");
            }
        }
    }

    [Test]
    public async Task A_snapshot_may_only_be_reverted_to_copied_exported_or_destroyed()
    {
        var snapshot = await _kit.VmAsync(VmPowerState.Halted, edit: v =>
        {
            v.IsASnapshot = true;
            v.IsATemplate = true;
        });
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", snapshot, "start"), "VM_IS_SNAPSHOT", snapshot, "start");
        await Client.InvokeAsync("VM.assert_operation_valid", snapshot, "revert");
        Assert.That(await OperationKit.AllowedAsync(Client, "VM", snapshot),
            Is.EqualTo(new[] { "destroy", "metadata_export", "export", "revert", "copy", "clone" }));
    }

    [Test]
    public async Task A_running_HVM_guest_without_drivers_lacks_clean_shutdown_until_it_advertises_the_feature()
    {
        var bare = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm);
        var advertising = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm,
            guest: g => g.Other = ValueMap.FromPairs([new("feature-shutdown", "1")]));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", bare, "clean_shutdown"), "VM_LACKS_FEATURE", bare);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", bare, "suspend"), "VM_LACKS_FEATURE", bare);
        await Client.InvokeAsync("VM.assert_operation_valid", advertising, "clean_shutdown");
        await Client.InvokeAsync("VM.assert_operation_valid", advertising, "clean_reboot");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", advertising, "changing_VCPUs_live"), "VM_LACKS_FEATURE", advertising);
    }

    [Test]
    public async Task A_guest_that_cannot_suspend_says_why()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running, guest: g => g.Other = ValueMap.FromPairs([new("data-cant-suspend-reason", "UEFI")]));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "suspend"), "VM_NON_SUSPENDABLE", vm, "UEFI");
    }

    [Test]
    public async Task A_VM_that_must_not_migrate_is_immobile_for_suspend_and_migration()
    {
        var vm = await _kit.VmAsync(VmPowerState.Halted, edit: v => v.Platform = ValueMap.FromPairs([new("nomigrate", "true")]));
        await _kit.EditAsync(vm, v => v.Metrics = VMMetricsRef.Null);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "migrate_send"), "VM_IS_IMMOBILE", vm);
    }

    [Test]
    public async Task Clone_of_a_suspended_VM_needs_the_pool_to_allow_it()
    {
        var vm = await _kit.VmAsync(VmPowerState.Suspended);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "clone"), "VM_BAD_POWER_STATE", vm, "halted", "suspended");
        var pool = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0]!;
        await Client.InvokeAsync("pool.add_to_other_config", pool, "allow_clone_suspended_vm", "true");
        try
        {
            await Client.InvokeAsync("VM.assert_operation_valid", vm, "clone");
            Assert.That(await OperationKit.AllowedAsync(Client, "VM", vm), Does.Contain("clone").And.Contain("copy"));
        }
        finally
        {
            await Client.InvokeAsync("pool.remove_from_other_config", pool, "allow_clone_suspended_vm");
        }
    }

    [Test]
    public async Task Only_templates_are_provisioned_and_only_snapshots_reverted()
    {
        var vm = _vms[VmPowerState.Halted];
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "provision"), "PROVISION_ONLY_ALLOWED_ON_TEMPLATE");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_operation_valid", vm, "revert"), "REVERT_ONLY_ALLOWED_ON_SNAPSHOT");
    }
}

/// <summary>The control domain, as first boot makes it: running, resident on this host, and not to be destroyed.</summary>
public class ControlDomainOperationsTests
{
    [Test]
    public async Task The_control_domain_lists_only_what_a_control_domain_may_do_and_refuses_the_rest()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var dom0 = daemon.Database.Snapshot.All<VMRecord>().Single(v => v.IsControlDomain).Ref.Value;
        Assert.That(await client.InvokeAsync("VM.get_allowed_operations", dom0),
            Is.EqualTo(new[] { "metadata_export", "changing_static_range", "changing_dynamic_range" }));
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.assert_operation_valid", dom0, "pause"),
            "OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.destroy", dom0), "VM_BAD_POWER_STATE", dom0, "halted, suspended", "running");

        daemon.Database.Write(tx => tx.Update(new VMRef(dom0), v => v.PowerState = VmPowerState.Halted));
        await daemon.SettledAsync();
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.destroy", dom0), "OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0");
    }
}
