using System.Globalization;
using System.Text.RegularExpressions;
using ApiSchema = Xapi.Model.ApiSchema;
using Xapi.Protocol;
using Xapi.Tests;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// The real-Xen scenario (tests/xen/scenario.sh, run in a Xen dom0 under QEMU by
/// tests/Xapi.Xen.Tests) on the simulator backend, so that the two backends are held to one
/// behaviour. The XenAPI calls and the checks on them mirror the script step by step, under the
/// script's step names; what only Xen can show (xl list, the guest's console) is the script's
/// alone. The step list is read from the script itself: a step added there and not here fails
/// this test.
/// </summary>
public partial class RealXenScenarioOnSimulatorTests
{
    private const long MiB = 1L << 20;

    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(1);

    // The script's steps that check Xen itself, dom0 or the payload rather than the XenAPI, or
    // that exist only to compare with xl (xl create's figure).
    private static readonly HashSet<string> XenOnlySteps =
    [
        "xenstored", "xl-list", "xl-info", "payload", "dom0check", "xe-host-list", "xen-host-facts", "xl-type-pvh", "xl-create",
        // The guest's own view of its network: it and dom0 ping each other over the bridge.
        "guest-net",
    ];

    private readonly List<string> _steps = [];
    private XenApiClient _client = null!;

    [Test]
    public async Task The_real_Xen_scenario_runs_step_by_step_on_the_simulator()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-xen-scenario-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        void Configure(ServerOptions o)
        {
            o.DataDir = dataDir;
            // The simulated guest boots and answers shutdown requests at once; the ignoring guest
            // is given up on after a short wait, as scenario.sh sets it.
            o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(100);
            o.SimulatedShutdownDelay = TimeSpan.FromMilliseconds(20);
            o.DomainShutdownTotalTimeout = ShutdownTimeout;
        }

        var daemon = await TestDaemon.StartAsync(Configure);
        try
        {
            Step("daemon-start");
            _client = await daemon.LoginAsync();
            Step("xenapi-login");
            var host = (string)((IReadOnlyList<object?>)(await _client.InvokeAsync("host.get_all"))!)[0]!;
            Assert.That(await _client.InvokeAsync("host.get_name_label", host), Is.Not.Empty);
            Step("xenapi-host-records");

            // A PV guest with direct kernel boot: a clone of the "Other install media" template.
            var template = (string)((IReadOnlyList<object?>)(await _client.InvokeAsync("VM.get_by_name_label", "Other install media"))!)[0]!;
            // Its static minimum leaves room below 128 MiB for the dynamic range step.
            var vm = await GuestVmAsync(template, "tinypv", "pv", "console=hvc0 quiet", staticMin: 64 * MiB);
            var mib128 = (128 * MiB).ToString(CultureInfo.InvariantCulture);
            Assert.That(await _client.InvokeAsync("VM.get_PV_kernel", vm), Is.EqualTo("/guest/vmlinuz"));
            Step("vm-create");

            var first = await StartAsync(vm, "vm-start");
            await GuestUpAsync(vm, "guest-console");
            await _client.InvokeAsync("VM.pause", vm);
            Assert.That(await PowerAsync(vm), Is.EqualTo("Paused"));
            Step("vm-pause");
            await _client.InvokeAsync("VM.unpause", vm);
            Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
            Step("vm-unpause");
            var metrics = (string)(await _client.InvokeAsync("VM.get_metrics", vm))!;
            Assert.That(Convert.ToInt64(await _client.InvokeAsync("VM_metrics.get_memory_actual", metrics), CultureInfo.InvariantCulture), Is.EqualTo(128 * MiB));
            Assert.That(Convert.ToInt64(await _client.InvokeAsync("VM_metrics.get_VCPUs_number", metrics), CultureInfo.InvariantCulture), Is.EqualTo(1));
            Step("vm-metrics");
            var mib96 = (96 * MiB).ToString(CultureInfo.InvariantCulture);
            await _client.InvokeAsync("VM.set_memory_dynamic_range", vm, mib96, mib96);
            Assert.That((await ((SimulatorBackend)daemon.Service<IHypervisor>()).TryGetDomainAsync(await UuidAsync(vm)))!.MemoryTarget, Is.EqualTo(96 * MiB),
                "the balloon target moved into the new range");
            Step("vm-memory-dynamic-range");
            await _client.InvokeAsync("VM.set_memory_dynamic_range", vm, mib128, mib128);
            await _client.InvokeAsync("VM.hard_shutdown", vm);
            await AssertHaltedAsync(vm, first);
            Step("vm-hard-shutdown");

            var second = await StartAsync(vm, "vm-start-again");
            await GuestUpAsync(vm, "guest-console-again");
            // Suspend into a suspend VDI, resume into a new domain; the same guest then answers the clean shutdown.
            await _client.InvokeAsync("VM.suspend", vm);
            Assert.That(await PowerAsync(vm), Is.EqualTo("Suspended"));
            Assert.That(await DomainOfAsync(daemon, vm), Is.Null, "the suspended guest has no domain");
            Assert.That(await _client.InvokeAsync("VM.get_suspend_VDI", vm), Is.Not.EqualTo("OpaqueRef:NULL"));
            Step("vm-suspend");
            await _client.InvokeAsync("VM.resume", vm, false, false);
            Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
            var resumed = await DomIdAsync(vm);
            Assert.That(resumed, Is.Not.EqualTo(second), "resume gives a new domain");
            Assert.That(await DomainOfAsync(daemon, vm), Is.EqualTo(resumed));
            Step("vm-resume");
            await _client.InvokeAsync("VM.clean_shutdown", vm);
            await AssertHaltedAsync(vm, resumed);
            Step("vm-clean-shutdown");

            // A reboot gives a new domain; the daemon restarted while it runs finds it again.
            var third = await StartAsync(vm, "vm-start-third");
            await _client.InvokeAsync("VM.hard_reboot", vm);
            Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
            var running = await DomIdAsync(vm);
            Assert.That(running, Is.Not.EqualTo(third), "hard_reboot gives a new domain");
            Assert.That(await DomainOfAsync(daemon, vm), Is.EqualTo(running));
            Step("vm-hard-reboot");
            _client.Dispose();
            await daemon.DisposeAsync();
            Step("daemon-stop");
            daemon = await TestDaemon.StartAsync(Configure);
            _client = await daemon.LoginAsync();
            Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
            Assert.That(await DomIdAsync(vm), Is.EqualTo(running));
            Assert.That(await DomainOfAsync(daemon, vm), Is.EqualTo(running));
            Step("daemon-restart-finds-guest");
            await _client.InvokeAsync("VM.set_memory_dynamic_range", vm, mib96, mib96);
            Assert.That((await daemon.Service<IHypervisor>().TryGetDomainAsync(await UuidAsync(vm)))!.MemoryTarget, Is.EqualTo(96 * MiB));
            Step("vm-dynamic-range-after-restart");
            await _client.InvokeAsync("VM.set_memory_dynamic_range", vm, mib128, mib128);

            // A guest that powers itself off (actions_after_shutdown = destroy): the daemon notices,
            // destroys the domain and marks the VM Halted.
            await _client.InvokeAsync("VM.set_PV_args", vm, "console=hvc0 quiet xtest=selfoff");
            await _client.InvokeAsync("VM.set_actions_after_shutdown", vm, "destroy");
            await _client.InvokeAsync("VM.hard_reboot", vm);
            var selfoff = await DomIdAsync(vm);
            ((SimulatorBackend)daemon.Service<IHypervisor>()).TriggerGuestShutdown(await UuidAsync(vm), ShutdownReason.Poweroff);
            var halted = await _client.UntilVmAsync(vm, r => (string?)r["power_state"] == "Halted");
            Assert.That(Convert.ToInt64(halted["domid"], CultureInfo.InvariantCulture), Is.EqualTo(-1), $"domid {selfoff} powered itself off");
            Assert.That(await DomainOfAsync(daemon, vm), Is.Null, "the daemon destroyed the domain");
            Step("guest-self-poweroff");

            // A PVH guest that ignores a clean shutdown: VM_SHUTDOWN_TIMEOUT after the daemon's
            // timeout, the domain left running; hard_shutdown then destroys it.
            var pvhVm = await GuestVmAsync(template, "tinypvh", "pvh", "console=hvc0 quiet xtest=ignore");
            Assert.That(await _client.InvokeAsync("VM.get_domain_type", pvhVm), Is.EqualTo("pvh"));
            Step("vm-create-pvh");
            var pvh = await StartAsync(pvhVm, "vm-start-pvh");
            var simulator = (SimulatorBackend)daemon.Service<IHypervisor>();
            Assert.That((await simulator.TryGetDomainAsync(await UuidAsync(pvhVm)))!.Type, Is.EqualTo(DomainType.Pvh));
            await GuestUpAsync(pvhVm, "guest-console-pvh");
            simulator.IgnoreShutdownRequests(await UuidAsync(pvhVm));
            await XenApiAssert.FailsAsync(() => _client.InvokeAsync("VM.clean_shutdown", pvhVm), "VM_SHUTDOWN_TIMEOUT", pvhVm, "1.");
            Assert.That(await PowerAsync(pvhVm), Is.EqualTo("Running"));
            Assert.That(await DomainOfAsync(daemon, pvhVm), Is.EqualTo(pvh), "the ignoring guest's domain is left running");
            Step("vm-clean-shutdown-ignored");
            await _client.InvokeAsync("VM.hard_shutdown", pvhVm);
            await AssertHaltedAsync(pvhVm, pvh);
            Assert.That(await DomainOfAsync(daemon, pvhVm), Is.Null);
            Step("vm-hard-shutdown-pvh");

            await DiskAndNetworkAsync(daemon, template, dataDir);

            _client.Dispose();
            await daemon.DisposeAsync();
            daemon = null;
            Step("daemon-stop-final");
        }
        finally
        {
            _client?.Dispose();
            if (daemon is not null)
            {
                await daemon.DisposeAsync();
            }
        }

        Assert.That(_steps, Is.EquivalentTo(ScenarioSteps().Except(XenOnlySteps)),
            "the steps of tests/xen/scenario.sh that go through the XenAPI, each run here");
    }

    /// <summary>
    /// The guest disk and network steps: an ext SR, a VDI with imported data attached to a PV guest,
    /// a VIF on a new internal network; the simulated guest writes its disk (on Xen: a stamp at
    /// sector 4096) and the export shows the write over the imported data.
    /// </summary>
    private async Task DiskAndNetworkAsync(TestDaemon daemon, string template, string dataDir)
    {
        var host = (string)((IReadOnlyList<object?>)(await _client.InvokeAsync("host.get_all"))!)[0]!;
        var location = Path.Combine(dataDir, "xapi-sr");
        Directory.CreateDirectory(location);
        var sr = (string)(await _client.InvokeAsync("SR.create", host, new Dictionary<string, object?> { ["location"] = location }, "0", "local-ext", "", "ext", "user", false,
            new Dictionary<string, object?>()))!;
        Assert.That(Directory.Exists(Path.Combine(location, (string)(await _client.InvokeAsync("SR.get_uuid", sr))!)), Is.True);
        Step("sr-create-ext");

        var vdi = await VdiAsync(sr, "guest-disk", 8 * MiB);
        var imported = new byte[8 * MiB];
        Random.Shared.NextBytes(imported.AsSpan(0, (int)MiB));
        using var http = new HttpClient { BaseAddress = daemon.Uri, Timeout = TimeSpan.FromSeconds(60) };
        var query = $"?session_id={Uri.EscapeDataString(_client.Session!)}&vdi={Uri.EscapeDataString(vdi)}&format=raw";
        using (var import = await http.PutAsync("/import_raw_vdi" + query, new ByteArrayContent(imported)))
        {
            Assert.That(import.StatusCode, Is.EqualTo(System.Net.HttpStatusCode.OK));
        }
        Step("vdi-import");

        var vm = await GuestVmAsync(template, "diskpv", "pv", "console=hvc0 quiet xtest=disknet guestip=10.0.0.2");
        var network = (string)(await _client.InvokeAsync("network.create", new Dictionary<string, object?>
        {
            ["name_label"] = "guest-net", ["name_description"] = "", ["MTU"] = "1500", ["other_config"] = new Dictionary<string, object?>(),
        }))!;
        Assert.That(await _client.InvokeAsync("network.get_bridge", network), Is.Not.Empty);
        var vbd = await VbdAsync(vm, vdi, "0", "Disk", bootable: false);
        var vifRecord = ApiSchema.Class("VIF").MinimalRecord();
        vifRecord["VM"] = vm;
        vifRecord["network"] = network;
        vifRecord["device"] = "0";
        vifRecord["MAC"] = "00:16:3e:00:00:02";
        vifRecord["MTU"] = "1500";
        await _client.InvokeAsync("VIF.create", vifRecord);
        Step("vbd-vif-create");

        var domid = await StartAsync(vm, "vm-start-disknet");
        Assert.That(await _client.InvokeAsync("VBD.get_device", vbd), Is.EqualTo("xvda"));
        Assert.That(await _client.InvokeAsync("VBD.get_currently_attached", vbd), Is.True);
        // On Xen the guest's console reports what it read; here its agent reports it is up.
        await _client.UntilVmAsync(vm, r => r["guest_metrics"] is string metrics && metrics != "OpaqueRef:NULL");
        var simulator = (SimulatorBackend)daemon.Service<IHypervisor>();
        Assert.That(await simulator.RunWorkloadStepAsync(await UuidAsync(vm)), Is.True, "the guest writes its disk");
        Step("guest-disk-read");
        var guestMetrics = (IReadOnlyDictionary<string, object?>)(await _client.InvokeAsync("VM_guest_metrics.get_record", await _client.InvokeAsync("VM.get_guest_metrics", vm)))!;
        Assert.That(((IReadOnlyDictionary<string, object?>)guestMetrics["os_version"]!).Keys, Is.Not.Empty);
        Assert.That(guestMetrics["PV_drivers_detected"], Is.True);
        Step("guest-agent");

        // Hot-plug a second VDI and a second VIF into the running guest, and out again.
        var vbd2 = await VbdAsync(vm, await VdiAsync(sr, "hotplug-disk", 4 * MiB), "1", "Disk", bootable: false);
        await _client.InvokeAsync("VBD.plug", vbd2);
        Assert.That((await _client.InvokeAsync("VBD.get_device", vbd2), await _client.InvokeAsync("VBD.get_currently_attached", vbd2)), Is.EqualTo(("xvdb", (object)true)));
        await _client.InvokeAsync("VBD.unplug", vbd2);
        Assert.That(await _client.InvokeAsync("VBD.get_currently_attached", vbd2), Is.False);
        Step("vbd-hotplug");
        vifRecord["device"] = "1";
        vifRecord["MAC"] = "00:16:3e:00:00:03";
        var vif2 = (string)(await _client.InvokeAsync("VIF.create", vifRecord))!;
        await _client.InvokeAsync("VIF.plug", vif2);
        Assert.That(await _client.InvokeAsync("VIF.get_currently_attached", vif2), Is.True);
        await _client.InvokeAsync("VIF.unplug", vif2);
        Assert.That(await _client.InvokeAsync("VIF.get_currently_attached", vif2), Is.False);
        Step("vif-hotplug");

        await _client.InvokeAsync("VM.clean_shutdown", vm);
        await AssertHaltedAsync(vm, domid);
        Step("vm-clean-shutdown-disknet");

        var exported = await http.GetByteArrayAsync("/export_raw_vdi" + query);
        Assert.That(exported, Has.Length.EqualTo(imported.Length));
        Assert.That(DiskPattern.TryReadBlock(exported.AsSpan(0, DiskPattern.BlockSize), out var writer, out _, out _) && writer == await UuidAsync(vm), Is.True,
            "the guest's write is in the export");
        Assert.That(exported.AsSpan(DiskPattern.BlockSize).SequenceEqual(imported.AsSpan(DiskPattern.BlockSize)), Is.True, "the imported data around it is intact");
        Step("vdi-export");

        await HvmCdAsync(template, sr, vdi);
    }

    /// <summary>
    /// The HVM steps: a guest booted by its firmware from a disk, its serial port set by
    /// platform:hvm_serial, an empty CD drive into which the data VDI goes and from which it comes out.
    /// </summary>
    private async Task HvmCdAsync(string template, string sr, string disc)
    {
        var bootVdi = await VdiAsync(sr, "hvm-boot", 24 * MiB);
        var vm = (string)(await _client.InvokeAsync("VM.clone", template, "hvmcd"))!;
        await _client.InvokeAsync("VM.set_is_a_template", vm, false);
        await _client.InvokeAsync("VM.set_HVM_boot_params", vm, new Dictionary<string, object?> { ["order"] = "c" });
        await _client.InvokeAsync("VM.add_to_platform", vm, "hvm_serial", "file:/var/log/xen/console/guest-hvmcd.log");
        var mib128 = (128 * MiB).ToString(CultureInfo.InvariantCulture);
        await _client.InvokeAsync("VM.set_memory_limits", vm, mib128, mib128, mib128, mib128);
        await _client.InvokeAsync("VM.set_VCPUs_max", vm, "1");
        await _client.InvokeAsync("VM.set_VCPUs_at_startup", vm, "1");
        await VbdAsync(vm, bootVdi, "0", "Disk", bootable: true);
        var cd = await VbdAsync(vm, null, "3", "CD", bootable: false);
        Assert.That(await _client.InvokeAsync("VM.get_domain_type", vm), Is.EqualTo("hvm"));
        Step("vm-create-hvm");

        var domid = await StartAsync(vm, "vm-start-hvm");
        await GuestUpAsync(vm, "guest-console-hvm");
        await _client.InvokeAsync("VBD.insert", cd, disc);
        Assert.That((await _client.InvokeAsync("VBD.get_empty", cd), await _client.InvokeAsync("VBD.get_VDI", cd)), Is.EqualTo((false, (object)disc)));
        Step("vbd-insert-hvm");
        await _client.InvokeAsync("VBD.eject", cd);
        Assert.That(await _client.InvokeAsync("VBD.get_empty", cd), Is.True);
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"));
        Step("vbd-eject-hvm");
        await _client.InvokeAsync("VM.hard_shutdown", vm);
        await AssertHaltedAsync(vm, domid);
        Step("vm-hard-shutdown-hvm");
    }

    [Test]
    public void The_scenario_script_names_its_steps_where_this_test_reads_them()
    {
        var steps = ScenarioSteps();
        Assert.That(steps, Does.Contain("vm-start").And.Contain("vm-hard-reboot").And.Contain("guest-self-poweroff").And.Contain("daemon-stop-final"));
        Assert.That(steps, Does.Not.Contain("name").And.Not.Contain("step"), "the helpers' own definitions are not steps");
    }

    private void Step(string name) => _steps.Add(name);

    /// <summary>A user VDI of <paramref name="size"/> bytes on <paramref name="sr"/>, as `xe vdi-create` makes it.</summary>
    private async Task<string> VdiAsync(string sr, string name, long size)
    {
        var disk = ApiSchema.Class("VDI").MinimalRecord();
        disk["name_label"] = name;
        disk["SR"] = sr;
        disk["virtual_size"] = size.ToString(CultureInfo.InvariantCulture);
        disk["type"] = "user";
        return (string)(await _client.InvokeAsync("VDI.create", disk))!;
    }

    /// <summary>A VBD as `xe vbd-create` makes it: read-write for a disk, an empty read-only drive for a CD without a VDI.</summary>
    private async Task<string> VbdAsync(string vm, string? vdi, string userdevice, string type, bool bootable)
    {
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = vdi ?? "OpaqueRef:NULL";
        vbd["empty"] = vdi is null;
        vbd["userdevice"] = userdevice;
        vbd["type"] = type;
        vbd["mode"] = type == "CD" ? "RO" : "RW";
        vbd["bootable"] = bootable;
        return (string)(await _client.InvokeAsync("VBD.create", vbd))!;
    }

    /// <summary>
    /// A guest as scenario.sh makes it: a clone of "Other install media" booting /guest/vmlinuz
    /// directly, 128 MiB (from <paramref name="staticMin"/> when given), one vCPU.
    /// </summary>
    private async Task<string> GuestVmAsync(string template, string name, string domainType, string kernelArgs, long staticMin = 128 * MiB)
    {
        var vm = (string)(await _client.InvokeAsync("VM.clone", template, name))!;
        await _client.InvokeAsync("VM.set_is_a_template", vm, false);
        await _client.InvokeAsync("VM.set_HVM_boot_policy", vm, "");
        await _client.InvokeAsync("VM.set_domain_type", vm, domainType);
        await _client.InvokeAsync("VM.set_PV_kernel", vm, "/guest/vmlinuz");
        await _client.InvokeAsync("VM.set_PV_ramdisk", vm, "/guest/initrd.gz");
        await _client.InvokeAsync("VM.set_PV_args", vm, kernelArgs);
        var mib128 = (128 * MiB).ToString(CultureInfo.InvariantCulture);
        await _client.InvokeAsync("VM.set_memory_limits", vm, staticMin.ToString(CultureInfo.InvariantCulture), mib128, mib128, mib128);
        await _client.InvokeAsync("VM.set_VCPUs_max", vm, "1");
        await _client.InvokeAsync("VM.set_VCPUs_at_startup", vm, "1");
        return vm;
    }

    private async Task<long> StartAsync(string vm, string step)
    {
        await _client.InvokeAsync("VM.start", vm, false, false);
        Assert.That(await PowerAsync(vm), Is.EqualTo("Running"), step);
        var domid = await DomIdAsync(vm);
        Assert.That(domid, Is.GreaterThan(0), step);
        Step(step);
        return domid;
    }

    /// <summary>On Xen the guest's console shows its boot marker; here its agent reports (VM_guest_metrics).</summary>
    private async Task GuestUpAsync(string vm, string step)
    {
        await _client.UntilVmAsync(vm, r => r["guest_metrics"] is string metrics && metrics != "OpaqueRef:NULL");
        Step(step);
    }

    private async Task AssertHaltedAsync(string vm, long domid)
    {
        Assert.That(await PowerAsync(vm), Is.EqualTo("Halted"), $"domid {domid}");
        Assert.That(await DomIdAsync(vm), Is.EqualTo(-1), $"domid {domid}");
    }

    private async Task<string?> PowerAsync(string vm) => (string?)await _client.InvokeAsync("VM.get_power_state", vm);

    private async Task<long> DomIdAsync(string vm) => Convert.ToInt64(await _client.InvokeAsync("VM.get_domid", vm), CultureInfo.InvariantCulture);

    private async Task<Guid> UuidAsync(string vm) => Guid.Parse((string)(await _client.InvokeAsync("VM.get_uuid", vm))!);

    /// <summary>The domain id the hypervisor itself gives the VM's domain (what xl list shows on Xen); null when it has none.</summary>
    private async Task<long?> DomainOfAsync(TestDaemon daemon, string vm) =>
        await daemon.Service<IHypervisor>().TryGetDomainAsync(await UuidAsync(vm)) is { } state ? state.DomId : null;

    /// <summary>Every step scenario.sh reports, in its order: `step NAME`, `start_vm NAME`, `guest_up NAME`, `stop_daemon NAME`.</summary>
    internal static List<string> ScenarioSteps()
    {
        var script = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "tests", "xen", "scenario.sh"));
        return [.. StepCall().Matches(script).Select(m => m.Groups[1].Value).Distinct()];
    }

    [GeneratedRegex(@"(?:^|[\s;&|{(])(?:step|start_vm|guest_up|stop_daemon) +([a-z0-9][a-z0-9-]*)(?=\s|$)", RegexOptions.Multiline)]
    private static partial Regex StepCall();
}
