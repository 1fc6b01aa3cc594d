using Xapi.Model;
using Xapi.Protocol;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The power operations over the wire, on the simulator: what each does to the VM and its devices
/// as a client reads them back, and the exact refusals. The simulated guests answer within
/// milliseconds so the tests wait on events, not on time.
/// </summary>
public class VmPowerTests() : SimulatedHostFixture()
{
    private const long MiB = 1L << 20;

    private async Task<object?> FieldAsync(string cls, string reference, string field) => (await RecordAsync(cls, reference))[field];

    private Task<string> VmAsync(string name, Action<Dictionary<string, object?>>? edit = null, bool withDevices = true) =>
        Client.CreateVmAsync(name, edit, withDevices);

    private Task<IReadOnlyDictionary<string, object?>> UntilAsync(string vm, Func<IReadOnlyDictionary<string, object?>, bool> until) =>
        Client.UntilVmAsync(vm, until);

    private static string PowerState(IReadOnlyDictionary<string, object?> vm) => (string)vm["power_state"]!;

    private static long DomId(IReadOnlyDictionary<string, object?> vm) => Convert.ToInt64(vm["domid"]);

    private async Task<string> StartedAsync(string name, Action<Dictionary<string, object?>>? edit = null)
    {
        var vm = await VmAsync(name, edit);
        await Client.InvokeAsync("VM.start", vm, false, false);
        return vm;
    }

    [Test]
    public async Task A_started_VM_runs_here_with_a_domain_its_devices_attached_and_its_metrics_filled()
    {
        var vm = await VmAsync("start");
        await Client.InvokeAsync("VM.start", vm, false, false);

        var record = await RecordAsync("VM", vm);
        Assert.That(PowerState(record), Is.EqualTo("Running"));
        Assert.That(DomId(record), Is.GreaterThan(0));
        Assert.That(record["resident_on"], Is.EqualTo(await HostAsync()));
        Assert.That(Convert.ToInt64(record["memory_target"]), Is.EqualTo(256 * MiB));
        var vbd = await RecordAsync("VBD", (string)((IReadOnlyList<object?>)record["VBDs"]!)[0]!);
        Assert.That(vbd["currently_attached"], Is.True);
        Assert.That(vbd["device"], Is.EqualTo("xvda"));
        var vif = await RecordAsync("VIF", (string)((IReadOnlyList<object?>)record["VIFs"]!)[0]!);
        Assert.That(vif["currently_attached"], Is.True);
        var metrics = await RecordAsync("VM_metrics", (string)record["metrics"]!);
        Assert.That(Convert.ToInt64(metrics["VCPUs_number"]), Is.EqualTo(1));
        Assert.That(metrics["current_domain_type"], Is.EqualTo("pv"));
        Assert.That((DateTime)metrics["start_time"]!, Is.GreaterThan(DateTime.UtcNow.AddMinutes(-1)));
        Assert.That((IReadOnlyList<object?>)record["allowed_operations"]!, Does.Contain("clean_shutdown").And.Contain("pause").And.Not.Contain("start"));
        Assert.That(await Simulator.TryGetDomainAsync(Guid.Parse((string)record["uuid"]!)), Is.Not.Null);
    }

    [Test]
    public async Task The_guest_agent_reports_into_guest_metrics_after_the_guest_boots()
    {
        var vm = await StartedAsync("agent");

        var record = await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef);
        var guest = await RecordAsync("VM_guest_metrics", (string)record["guest_metrics"]!);
        Assert.That(guest["PV_drivers_detected"], Is.True);
        Assert.That(((IReadOnlyDictionary<string, object?>)guest["os_version"]!)["distro"], Is.EqualTo(GuestOsProfile.Debian12.Distro));
        Assert.That((IReadOnlyDictionary<string, object?>)guest["networks"]!, Does.ContainKey("0/ip"));
    }

    [Test]
    public async Task A_VM_started_paused_is_paused_and_unpause_runs_the_same_domain()
    {
        var vm = await VmAsync("paused start");
        await Client.InvokeAsync("VM.start", vm, true, false);
        var paused = await RecordAsync("VM", vm);
        Assert.That(PowerState(paused), Is.EqualTo("Paused"));

        await Client.InvokeAsync("VM.unpause", vm);
        var running = await RecordAsync("VM", vm);
        Assert.That(PowerState(running), Is.EqualTo("Running"));
        Assert.That(DomId(running), Is.EqualTo(DomId(paused)));

        await Client.InvokeAsync("VM.pause", vm);
        Assert.That(await FieldAsync("VM", vm, "power_state"), Is.EqualTo("Paused"));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.pause", vm), "VM_BAD_POWER_STATE", vm, "running", "paused");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
        Assert.That(await FieldAsync("VM", vm, "power_state"), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task A_clean_shutdown_halts_the_VM_frees_its_domain_and_detaches_its_devices()
    {
        var vm = await StartedAsync("clean shutdown");
        await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef);

        await Client.InvokeAsync("VM.clean_shutdown", vm);

        var record = await RecordAsync("VM", vm);
        Assert.That(PowerState(record), Is.EqualTo("Halted"));
        Assert.That(DomId(record), Is.EqualTo(-1));
        Assert.That(record["resident_on"], Is.EqualTo(XType.NullRef));
        var vbd = await RecordAsync("VBD", (string)((IReadOnlyList<object?>)record["VBDs"]!)[0]!);
        Assert.That(vbd["currently_attached"], Is.False);
        Assert.That(await Simulator.TryGetDomainAsync(Guid.Parse((string)record["uuid"]!)), Is.Null);
        Assert.That((IReadOnlyList<object?>)record["allowed_operations"]!, Does.Contain("start").And.Not.Contain("clean_shutdown"));
    }

    [Test]
    public async Task A_guest_without_its_agent_does_not_acknowledge_a_clean_shutdown_and_a_hard_one_still_works()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.SimulatedGuestAgentDelay = TimeSpan.FromHours(1));
        using var client = await daemon.LoginAsync();
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "no agent";
        record["memory_static_max"] = record["memory_dynamic_max"] = record["memory_dynamic_min"] = record["memory_static_min"] = (128 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        await client.InvokeAsync("VM.start", vm, false, false);

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.clean_shutdown", vm), "VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", vm);
        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"));

        // VM.shutdown tries the clean way, then the hard one.
        await client.InvokeAsync("VM.shutdown", vm);
        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task Reboots_give_the_VM_a_new_domain_and_keep_it_running_with_its_devices()
    {
        var vm = await StartedAsync("reboots");
        var first = DomId(await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef));

        await Client.InvokeAsync("VM.clean_reboot", vm);
        var afterClean = await RecordAsync("VM", vm);
        Assert.That(PowerState(afterClean), Is.EqualTo("Running"));
        Assert.That(DomId(afterClean), Is.Not.EqualTo(first));
        Assert.That(afterClean["guest_metrics"], Is.EqualTo(XType.NullRef), "the new guest has not reported yet");

        await Client.InvokeAsync("VM.hard_reboot", vm);
        var afterHard = await RecordAsync("VM", vm);
        Assert.That(PowerState(afterHard), Is.EqualTo("Running"));
        Assert.That(DomId(afterHard), Is.Not.EqualTo(DomId(afterClean)));
        var vbd = await RecordAsync("VBD", (string)((IReadOnlyList<object?>)afterHard["VBDs"]!)[0]!);
        Assert.That(vbd["currently_attached"], Is.True);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Refused_transitions_name_the_states_allowed_and_the_state_found()
    {
        var vm = await VmAsync("refusals", withDevices: false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.clean_shutdown", vm), "VM_BAD_POWER_STATE", vm, "running", "halted");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.unpause", vm), "VM_BAD_POWER_STATE", vm, "paused", "halted");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.hard_reboot", vm), "VM_BAD_POWER_STATE", vm, "paused, running", "halted");
        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.resume", vm, false, false), "VM_BAD_POWER_STATE", vm, "suspended", "running");
        await Client.InvokeAsync("VM.pause", vm);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.suspend", vm), "VM_BAD_POWER_STATE", vm, "running", "paused");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.clean_reboot", vm), "VM_BAD_POWER_STATE", vm, "running", "paused");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", vm), "VM_BAD_POWER_STATE", vm, "halted, suspended", "paused");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Start_hides_why_the_host_refuses_and_start_on_names_it()
    {
        var vm = await VmAsync("too many vcpus", r => r["VCPUs_at_startup"] = "2", withDevices: false);
        var host = await HostAsync();

        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "NO_HOSTS_AVAILABLE");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start_on", vm, host, false, false),
            "VALUE_NOT_SUPPORTED", "VCPUs-at-startup", "2", "value greater than VCPUs-max");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_can_boot_here", vm, host),
            "VALUE_NOT_SUPPORTED", "VCPUs-at-startup", "2", "value greater than VCPUs-max");
        Assert.That(await FieldAsync("VM", vm, "power_state"), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task A_VM_larger_than_the_host_is_refused_with_the_bytes_needed_and_free_and_nothing_is_left_running()
    {
        var vm = await VmAsync("huge", r =>
        {
            r["memory_static_max"] = r["memory_dynamic_max"] = r["memory_dynamic_min"] = (8L << 30).ToString();
        }, withDevices: false);
        var host = await HostAsync();

        var onHost = await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start_on", vm, host, false, false), "HOST_NOT_ENOUGH_FREE_MEMORY");
        Assert.That(long.Parse(onHost.Parameters[0]), Is.GreaterThan(8L << 30));
        Assert.That(long.Parse(onHost.Parameters[1]), Is.LessThan(4L << 30));
        // VM.start lets the backend try (it could squeeze others): the backend's numbers come back.
        var started = await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "HOST_NOT_ENOUGH_FREE_MEMORY");
        Assert.That(long.Parse(started.Parameters[0]), Is.GreaterThan(long.Parse(started.Parameters[1])));
        Assert.That(await FieldAsync("VM", vm, "power_state"), Is.EqualTo("Halted"));
        Assert.That(Convert.ToInt64(await FieldAsync("VM", vm, "domid")), Is.EqualTo(-1));
    }

    [Test]
    public async Task A_VM_whose_disk_SR_is_not_attached_here_cannot_boot_here()
    {
        var vm = await VmAsync("needs sr");
        var vdi = (string)(await Client.InvokeAsync("VBD.get_VDI", ((IReadOnlyList<object?>)(await FieldAsync("VM", vm, "VBDs"))!)[0]))!;
        var sr = (string)(await Client.InvokeAsync("VDI.get_SR", vdi))!;
        var pbd = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_PBDs", sr))!)[0]!;
        Daemon.Database.Write(tx => tx.Update(new PBDRef(pbd), p => p.CurrentlyAttached = false));
        try
        {
            await Daemon.SettledAsync();
            var host = await HostAsync();
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_can_boot_here", vm, host), "VM_REQUIRES_SR", vm, sr);
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "NO_HOSTS_AVAILABLE");
        }
        finally
        {
            Daemon.Database.Write(tx => tx.Update(new PBDRef(pbd), p => p.CurrentlyAttached = true));
            await Daemon.SettledAsync();
        }
    }

    [Test]
    public async Task A_guest_that_powers_off_by_itself_is_halted_and_one_that_reboots_gets_a_new_domain()
    {
        var off = await StartedAsync("guest poweroff");
        var reboots = await StartedAsync("guest reboot");
        var rebootsDomId = DomId(await RecordAsync("VM", reboots));

        Simulator.TriggerGuestShutdown(Guid.Parse((string)(await FieldAsync("VM", off, "uuid"))!), ShutdownReason.Poweroff);
        Simulator.TriggerGuestShutdown(Guid.Parse((string)(await FieldAsync("VM", reboots, "uuid"))!), ShutdownReason.Reboot);

        var halted = await UntilAsync(off, r => PowerState(r) == "Halted");
        Assert.That(DomId(halted), Is.EqualTo(-1));
        var rebooted = await UntilAsync(reboots, r => DomId(r) != rebootsDomId);
        Assert.That(PowerState(rebooted), Is.EqualTo("Running"));
        Assert.That(DomId(rebooted), Is.GreaterThan(0));
        await Client.InvokeAsync("VM.hard_shutdown", reboots);
    }

    [Test]
    public async Task A_guest_that_crashes_right_after_starting_is_not_restarted_and_a_preserved_one_stays_paused()
    {
        var loop = await StartedAsync("crash loop");
        var kept = await StartedAsync("preserved", r => r["actions_after_crash"] = "preserve");
        var keptDomId = DomId(await RecordAsync("VM", kept));

        Simulator.TriggerGuestShutdown(Guid.Parse((string)(await FieldAsync("VM", loop, "uuid"))!), ShutdownReason.Crash);
        Simulator.TriggerGuestShutdown(Guid.Parse((string)(await FieldAsync("VM", kept, "uuid"))!), ShutdownReason.Crash);

        await UntilAsync(loop, r => PowerState(r) == "Halted");
        var paused = await UntilAsync(kept, r => PowerState(r) == "Paused");
        Assert.That(DomId(paused), Is.EqualTo(keptDomId));
        await Client.InvokeAsync("VM.hard_shutdown", kept);
        Assert.That(await FieldAsync("VM", kept, "power_state"), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task Power_state_reset_refuses_a_VM_whose_domain_runs_and_resets_one_whose_domain_is_gone()
    {
        var vm = await StartedAsync("reset");
        var uuid = Guid.Parse((string)(await FieldAsync("VM", vm, "uuid"))!);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.power_state_reset", vm), "DOMAIN_EXISTS", vm);

        await Client.InvokeAsync("VM.pause", vm);
        await Client.InvokeAsync("VM.power_state_reset", vm);
        var record = await RecordAsync("VM", vm);
        Assert.That(PowerState(record), Is.EqualTo("Halted"));
        Assert.That(DomId(record), Is.EqualTo(-1));
        Assert.That(await Simulator.TryGetDomainAsync(uuid), Is.Null);

        var dom0 = Daemon.Database.Snapshot.All<VMRecord>().First(v => v.IsControlDomain).Ref.Value;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.power_state_reset", dom0), "CANNOT_RESET_CONTROL_DOMAIN", dom0);
    }

    [Test]
    public async Task An_async_start_reports_progress_through_its_task_and_succeeds()
    {
        var vm = await VmAsync("async start");
        var task = (string)(await Client.InvokeAsync("Async.VM.start", vm, false, false))!;

        var done = await Client.WatchTaskAsync(task);
        Assert.That(done["status"], Is.EqualTo("success"));
        Assert.That(Convert.ToDouble(done["progress"]), Is.EqualTo(1.0));
        Assert.That(await FieldAsync("VM", vm, "power_state"), Is.EqualTo("Running"));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Suspend_keeps_the_guest_state_in_an_image_on_the_SR_and_resume_brings_it_back()
    {
        var vm = await StartedAsync("suspend");
        var uuid = Guid.Parse((string)(await FieldAsync("VM", vm, "uuid"))!);
        await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef);
        // The guest's counter ticks once a simulated second: let it reach a value a fresh boot would not have.
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
        {
            while ((await Simulator.TryGetDomainAsync(uuid))!.GuestCounter < 2)
            {
                await Task.Delay(50, deadline.Token);
            }
        }

        var counter = (await Simulator.TryGetDomainAsync(uuid))!.GuestCounter;
        await Client.InvokeAsync("VM.suspend", vm);
        var suspended = await RecordAsync("VM", vm);
        Assert.That(PowerState(suspended), Is.EqualTo("Suspended"));
        Assert.That(DomId(suspended), Is.EqualTo(-1));
        Assert.That(suspended["resident_on"], Is.EqualTo(XType.NullRef));
        Assert.That((string)suspended["last_booted_record"]!, Is.Not.Empty);
        var image = (string)suspended["suspend_VDI"]!;
        var imageRecord = await RecordAsync("VDI", image);
        Assert.That(imageRecord["type"], Is.EqualTo("suspend"));
        Assert.That(imageRecord["name_label"], Is.EqualTo("Suspend image"));
        Assert.That(((IReadOnlyDictionary<string, object?>)imageRecord["sm_config"]!)["vmhint"], Is.EqualTo(uuid.ToString("D")));
        Assert.That(await Simulator.TryGetDomainAsync(uuid), Is.Null);
        var vbd = await RecordAsync("VBD", (string)((IReadOnlyList<object?>)suspended["VBDs"]!)[0]!);
        Assert.That(vbd["currently_attached"], Is.True, "a suspended VM keeps its disks in use");

        await Client.InvokeAsync("VM.resume", vm, false, false);
        var resumed = await RecordAsync("VM", vm);
        Assert.That(PowerState(resumed), Is.EqualTo("Running"));
        Assert.That(resumed["suspend_VDI"], Is.EqualTo(XType.NullRef));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VDI.get_record", image), "HANDLE_INVALID", "VDI", image);
        Assert.That((await Simulator.TryGetDomainAsync(uuid))!.GuestCounter, Is.GreaterThanOrEqualTo(counter), "the guest carries on from where it was suspended");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task A_suspended_VM_shut_down_hard_loses_its_image_and_is_halted()
    {
        var vm = await StartedAsync("suspend then halt");
        await UntilAsync(vm, r => (string)r["guest_metrics"]! != XType.NullRef);
        await Client.InvokeAsync("VM.suspend", vm);
        var image = (string)(await FieldAsync("VM", vm, "suspend_VDI"))!;

        await Client.InvokeAsync("VM.hard_shutdown", vm);

        var record = await RecordAsync("VM", vm);
        Assert.That(PowerState(record), Is.EqualTo("Halted"));
        Assert.That(record["suspend_VDI"], Is.EqualTo(XType.NullRef));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VDI.get_record", image), "HANDLE_INVALID", "VDI", image);
        var vbd = await RecordAsync("VBD", (string)((IReadOnlyList<object?>)record["VBDs"]!)[0]!);
        Assert.That(vbd["currently_attached"], Is.False);
    }

    [Test]
    public async Task A_start_delay_keeps_the_start_registered_after_the_VM_runs()
    {
        var vm = await VmAsync("delayed", withDevices: false);
        await Client.InvokeAsync("VM.set_start_delay", vm, "1");
        var task = (string)(await Client.InvokeAsync("Async.VM.start", vm, false, false))!;

        var running = await UntilAsync(vm, r => PowerState(r) == "Running");
        Assert.That(((IReadOnlyDictionary<string, object?>)running["current_operations"]!).Values, Does.Contain("start"),
            "the VM runs while its start still waits out the delay");
        Assert.That((await Client.WatchTaskAsync(task))["status"], Is.EqualTo("success"));
        Assert.That((IReadOnlyDictionary<string, object?>)(await RecordAsync("VM", vm))["current_operations"]!, Is.Empty);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Making_a_template_needs_a_halted_VM_and_drops_its_metrics_and_making_a_VM_again_is_its_install_time()
    {
        var vm = await VmAsync("template to be", withDevices: false);
        await Client.InvokeAsync("VM.start", vm, false, false);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_is_a_template", vm, true), "VM_BAD_POWER_STATE", vm, "halted", "running");
        await Client.InvokeAsync("VM.hard_shutdown", vm);
        var metrics = (string)(await FieldAsync("VM", vm, "metrics"))!;

        await Client.InvokeAsync("VM.set_is_a_template", vm, true);
        var template = await RecordAsync("VM", vm);
        Assert.That(template["is_a_template"], Is.True);
        Assert.That(template["metrics"], Is.EqualTo(XType.NullRef));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM_metrics.get_record", metrics), "HANDLE_INVALID", "VM_metrics", metrics);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.start", vm, false, false), "VM_IS_TEMPLATE", vm, "start");

        var before = DateTime.UtcNow.AddSeconds(-1);
        await Client.InvokeAsync("VM.set_is_a_template", vm, false);
        var installed = await RecordAsync("VM", vm);
        Assert.That(installed["is_a_template"], Is.False);
        var newMetrics = await RecordAsync("VM_metrics", (string)installed["metrics"]!);
        Assert.That((DateTime)newMetrics["install_time"]!, Is.GreaterThanOrEqualTo(before));
        await Client.InvokeAsync("VM.start", vm, false, false);
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }

    [Test]
    public async Task Each_power_operation_raises_the_alert_real_hosts_raise()
    {
        var vm = await VmAsync("alerted", withDevices: false);
        var uuid = (string)(await FieldAsync("VM", vm, "uuid"))!;
        var host = await RecordAsync("host", await HostAsync());
        await Client.InvokeAsync("VM.start", vm, false, false);
        await Client.InvokeAsync("VM.pause", vm);
        await Client.InvokeAsync("VM.unpause", vm);
        await Client.InvokeAsync("VM.hard_reboot", vm);
        await Client.InvokeAsync("VM.hard_shutdown", vm);

        var alerts = ((IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("message.get", "VM", uuid, DateTime.UtcNow.AddHours(-1)))!)
            .Values.Cast<IReadOnlyDictionary<string, object?>>().OrderBy(m => (DateTime)m["timestamp"]!).ToList();
        Assert.That(alerts.Select(m => m["name"]), Is.EquivalentTo(new[] { "VM_STARTED", "VM_PAUSED", "VM_UNPAUSED", "VM_REBOOTED", "VM_SHUTDOWN" }));
        Assert.That(alerts.Select(m => Convert.ToInt64(m["priority"])), Is.All.EqualTo(5));
        Assert.That(alerts.Single(m => (string)m["name"]! == "VM_STARTED")["body"],
            Is.EqualTo($"VM 'alerted' (uuid: {uuid}) started on host: {host["name_label"]} (uuid: {host["uuid"]})"));
        Assert.That(alerts.Single(m => (string)m["name"]! == "VM_SHUTDOWN")["body"], Is.EqualTo($"VM 'alerted' (uuid: {uuid}) shutdown forcibly"));
        Assert.That(alerts.Single(m => (string)m["name"]! == "VM_REBOOTED")["body"], Is.EqualTo($"VM 'alerted' (uuid: {uuid}) rebooted forcibly"));
    }
}
