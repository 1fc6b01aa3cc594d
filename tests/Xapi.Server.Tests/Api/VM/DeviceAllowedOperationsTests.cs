using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// VBD and VIF operations by their VM's power state, as real hosts decide them
/// (xapi_vbd_helpers.ml, xapi_vif_helpers.ml; /work/notes/vm-facts.md §6.3, §7.3).
/// </summary>
public class DeviceAllowedOperationsTests() : LoggedInFixture(RpcDialect.JsonRpcV2)
{
    private OperationKit _kit = null!;

    [OneTimeSetUp]
    public void CreateKit() => _kit = new OperationKit(Daemon);

    private XenApiException? Refusal(string cls, string reference, string op, string task = "OpaqueRef:00000000-0000-0000-0000-0000000000aa")
    {
        try
        {
            Daemon.Service<OperationGuard>().Begin(ApiSchema.Class(cls), reference, op, task).Dispose();
            return null;
        }
        catch (XenApiException e)
        {
            return e;
        }
    }

    private static void AssertRefused(XenApiException? error, string code, params string[] parameters)
    {
        Assert.That(error, Is.Not.Null, $"expected {code}");
        Assert.That(error!.Code, Is.EqualTo(code), error.Message);
        Assert.That(error.Parameters, Is.EqualTo(parameters));
    }

    public static IEnumerable<TestCaseData> DiskLists()
    {
        yield return new TestCaseData(VmPowerState.Halted, false, new[] { "attach" }).SetName("A disk of a halted VM may only be attached");
        yield return new TestCaseData(VmPowerState.Running, false, new[] { "attach", "plug", "pause", "unpause" }).SetName("A detached disk of a running VM may be plugged");
        yield return new TestCaseData(VmPowerState.Running, true, new[] { "attach", "unplug", "unplug_force", "pause", "unpause" }).SetName("An attached disk of a running VM may be unplugged");
        yield return new TestCaseData(VmPowerState.Paused, true, new[] { "attach", "pause", "unpause" }).SetName("A disk of a paused VM may be paused");
        yield return new TestCaseData(VmPowerState.Suspended, true, new[] { "attach" }).SetName("A disk of a suspended VM may only be attached");
    }

    [TestCaseSource(nameof(DiskLists))]
    public async Task A_disk_lists_what_its_VM_state_allows(VmPowerState state, bool attached, string[] expected)
    {
        var vm = await _kit.VmAsync(state);
        var vbd = await _kit.VbdAsync(vm, b => b.CurrentlyAttached = attached);
        Assert.That(await OperationKit.AllowedAsync(Client, "VBD", vbd, vm), Is.EqualTo(expected));
    }

    [Test]
    public async Task Plugging_a_disk_of_a_halted_VM_is_refused_with_the_VMs_power_state()
    {
        var vm = await _kit.VmAsync(VmPowerState.Halted);
        var vbd = await _kit.VbdAsync(vm);
        AssertRefused(Refusal("VBD", vbd, "plug"), "VM_BAD_POWER_STATE", vm, "running", "halted");
        AssertRefused(Refusal("VBD", vbd, "insert"), "VBD_NOT_REMOVABLE_MEDIA", vbd);
    }

    [Test]
    public async Task An_empty_CD_may_be_inserted_into_but_not_ejected()
    {
        var vm = await _kit.VmAsync(VmPowerState.Halted);
        var cd = await _kit.VbdAsync(vm, withDisk: false);
        Assert.That(await OperationKit.AllowedAsync(Client, "VBD", cd, vm), Is.EqualTo(new[] { "attach", "insert" }));
        AssertRefused(Refusal("VBD", cd, "eject"), "VBD_IS_EMPTY", cd);
    }

    [Test]
    public async Task A_CD_of_a_suspended_VM_can_be_neither_inserted_nor_ejected()
    {
        var vm = await _kit.VmAsync(VmPowerState.Suspended);
        var cd = await _kit.VbdAsync(vm, withDisk: false);
        AssertRefused(Refusal("VBD", cd, "insert"), "VM_BAD_POWER_STATE", vm, "halted, running", "suspended");
    }

    [Test]
    public async Task A_running_HVM_guest_without_drivers_cannot_hotplug_and_its_CDs_never_hotplug()
    {
        var bare = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm);
        var disk = await _kit.VbdAsync(bare);
        AssertRefused(Refusal("VBD", disk, "plug"), "VM_MISSING_PV_DRIVERS", bare);

        var refusing = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm, guest: g => g.CanUseHotplugVbd = TristateType.No);
        AssertRefused(Refusal("VBD", await _kit.VbdAsync(refusing), "plug"), "OPERATION_NOT_ALLOWED", "VM states it does not support VBD hotplug.");

        var able = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm, guest: g => g.CanUseHotplugVbd = TristateType.Yes);
        Assert.That(Refusal("VBD", await _kit.VbdAsync(able), "plug"), Is.Null);
        AssertRefused(Refusal("VBD", await _kit.VbdAsync(able, withDisk: false), "plug"),
            "OPERATION_NOT_ALLOWED", "HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected");
    }

    [Test]
    public async Task A_device_operation_in_progress_refuses_the_next_one()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running);
        var vbd = await _kit.VbdAsync(vm);
        var vif = await _kit.VifAsync(vm);
        const string task = "OpaqueRef:00000000-0000-0000-0000-0000000000b1";
        var guard = Daemon.Service<OperationGuard>();
        using (guard.Begin(ApiSchema.Class("VBD"), vbd, "plug", task))
        using (guard.Begin(ApiSchema.Class("VIF"), vif, "plug", task))
        {
            AssertRefused(Refusal("VBD", vbd, "attach"), "OTHER_OPERATION_IN_PROGRESS", "VBD", vbd, "plug", task);
            // VIFs name their operations in braces even when one runs.
            AssertRefused(Refusal("VIF", vif, "attach"), "OTHER_OPERATION_IN_PROGRESS", "VIF", vif, "{plug}", $"{{{task}}}");
        }
    }

    [Test]
    public async Task A_VM_shutting_down_refuses_device_hotplug()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running);
        var vbd = await _kit.VbdAsync(vm);
        var vif = await _kit.VifAsync(vm);
        using (Daemon.Service<OperationGuard>().Begin(ApiSchema.Class("VM"), vm, "clean_shutdown", "OpaqueRef:00000000-0000-0000-0000-0000000000b2"))
        {
            AssertRefused(Refusal("VBD", vbd, "plug"), "OPERATION_NOT_ALLOWED", $"Current operation on VM:{vm} is clean_shutdown");
            AssertRefused(Refusal("VIF", vif, "plug"), "OPERATION_NOT_ALLOWED", $"Current operation on VM:{vm} is clean_shutdown");
        }
    }

    [Test]
    public async Task A_disk_another_running_VM_writes_is_not_attachable()
    {
        var writer = await _kit.VmAsync(VmPowerState.Running);
        var first = await _kit.VbdAsync(writer, b => b.CurrentlyAttached = true);
        var vdi = (string)(await Client.InvokeAsync("VBD.get_VDI", first))!;
        var other = await _kit.VmAsync(VmPowerState.Halted);
        var second = await _kit.VbdAsync(other);
        Daemon.Database.Write(tx => tx.Update(new VBDRef(second), b => b.VDI = new VDIRef(vdi)));
        await Daemon.SettledAsync();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.assert_attachable", second), "VDI_IN_USE", vdi);
        // The stored list skips the sharing check, as on real hosts.
        Assert.That(await OperationKit.AllowedAsync(Client, "VBD", second, other), Does.Contain("attach"));
        await Client.InvokeAsync("VBD.assert_attachable", first);
    }

    public static IEnumerable<TestCaseData> VifLists()
    {
        yield return new TestCaseData(VmPowerState.Halted, false, new[] { "attach" }).SetName("A VIF of a halted VM may only be attached");
        yield return new TestCaseData(VmPowerState.Running, false, new[] { "attach", "plug" }).SetName("A detached VIF of a running VM may be plugged");
        yield return new TestCaseData(VmPowerState.Running, true, new[] { "attach", "unplug" }).SetName("An attached VIF of a running VM may be unplugged");
        yield return new TestCaseData(VmPowerState.Suspended, true, new[] { "attach" }).SetName("A VIF of a suspended VM may only be attached");
    }

    [TestCaseSource(nameof(VifLists))]
    public async Task A_VIF_lists_what_its_VM_state_allows(VmPowerState state, bool attached, string[] expected)
    {
        var vm = await _kit.VmAsync(state);
        var vif = await _kit.VifAsync(vm, v => v.CurrentlyAttached = attached);
        Assert.That(await OperationKit.AllowedAsync(Client, "VIF", vif, vm), Is.EqualTo(expected));
    }

    [Test]
    public async Task Plugging_a_VIF_of_a_paused_VM_is_refused_with_the_VMs_power_state()
    {
        var vm = await _kit.VmAsync(VmPowerState.Paused);
        var vif = await _kit.VifAsync(vm);
        AssertRefused(Refusal("VIF", vif, "plug"), "VM_BAD_POWER_STATE", vm, "running", "paused");
    }

    [Test]
    public async Task A_running_HVM_guest_that_refuses_VIF_hotplug_says_so()
    {
        var vm = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm, guest: g => g.CanUseHotplugVif = TristateType.No);
        var vif = await _kit.VifAsync(vm);
        AssertRefused(Refusal("VIF", vif, "plug"), "OPERATION_NOT_ALLOWED", "VM states it does not support VIF hotplug.");
        var bare = await _kit.VmAsync(VmPowerState.Running, DomainType.Hvm);
        var detached = await _kit.VifAsync(bare);
        AssertRefused(Refusal("VIF", detached, "plug"), "VM_MISSING_PV_DRIVERS", bare);
        // Being detached is found before the missing drivers.
        AssertRefused(Refusal("VIF", detached, "unplug"), "DEVICE_ALREADY_DETACHED", detached);
    }
}
