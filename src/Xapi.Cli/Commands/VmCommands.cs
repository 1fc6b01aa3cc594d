using System.Globalization;
using System.Xml.Linq;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// The VM commands administrators type every day, as real xe runs them (cli_operations.ml):
/// install from a template, power operations through VM selectors, clone, copy, snapshot and
/// revert, uninstall with its confirmation, disks, CDs and VIFs, and the event and task waits
/// scripts use.
/// </summary>
internal static class VmCommands
{
    private const string NewNameLabel = "new-name-label";
    private const string NewNameDescription = "new-name-description";
    private const string SrUuid = "sr-uuid";
    private const string SrNameLabel = "sr-name-label";
    private const string Progress = "progress";
    private const string On = "on";
    private const string Paused = "paused";
    private const string InstalledDescription = "Installed via xe CLI";
    private const string CreatedByXe = "Created by xe";

    // The VBD other-config key by which vm-uninstall knows which disks a VM owns.
    private const string OwnerKey = "owner";

    public static IEnumerable<CliCommand> All() =>
    [
        new("vm-install",
            "Install a new VM from a template. The template parameter can match either the template name or the uuid.",
            [NewNameLabel], [SrNameLabel, SrUuid, "template", "copy-bios-strings-from"], InstallAsync) { Standard = true },
        Selecting("vm-start",
            "Start the selected VM(s). Where pooling is enabled, the host on which to start can be specified with the 'on' parameter that takes a uuid. The optional parameter '--force' will bypass any hardware-compatibility warnings.",
            [], [CliParams.Force, On, Paused], StartAsync),
        Selecting("vm-suspend", "Suspend the selected VM(s).", [], [], run =>
            CliSelectors.DoAsync(run, CliSelector.Vm(), [Progress], vm => Void(CliTasks.RunAsync(run, "VM.suspend", vm.Ref)))),
        Selecting("vm-resume", "Resume the selected VM(s).", [], [CliParams.Force, On], ResumeAsync),
        Selecting("vm-shutdown", "Shutdown the selected VM(s). The optional argument --force will forcibly shut down the VM.", [], [CliParams.Force], run =>
            CliSelectors.DoAsync(run, CliSelector.Vm(), [Progress], vm =>
                Void(CliTasks.RunAsync(run, CliValues.BoolParam(run, CliParams.Force) ? "VM.hard_shutdown" : "VM.clean_shutdown", vm.Ref)))),
        Selecting("vm-reboot", "Reboot the selected VM(s).", [], [CliParams.Force], run =>
            CliSelectors.DoAsync(run, CliSelector.Vm(), [], vm =>
                Void(run.CallAsync(CliValues.BoolParam(run, CliParams.Force) ? "VM.hard_reboot" : "VM.clean_reboot", vm.Ref)))),
        Selecting("vm-pause", "Pause a running VM. Note this operation does not free the associated memory (see 'vm-suspend').", [], [], run =>
            CliSelectors.DoAsync(run, CliSelector.Vm(), [], vm => Void(run.CallAsync("VM.pause", vm.Ref)))),
        Selecting("vm-unpause", "Unpause a paused VM.", [], [], run =>
            CliSelectors.DoAsync(run, CliSelector.Vm(), [], vm => Void(run.CallAsync("VM.unpause", vm.Ref)))),
        Selecting("vm-clone", "Clone an existing VM, using storage-level fast disk clone operation where available.",
            [NewNameLabel], [NewNameDescription], run =>
                CloneLikeAsync(run, CliSelector.Vm(includeTemplates: true), (vm, name) => run.CallAsync("VM.clone", vm.Ref, name))),
        Selecting("vm-snapshot", "Snapshot an existing VM, using storage-level fast disk snapshot operation where available.",
            [NewNameLabel], [NewNameDescription, "ignore-vdi-uuids"], SnapshotAsync),
        Selecting("vm-copy",
            "Copy an existing VM, but without using storage-level fast disk clone operation (even if this is available). The disk images of the copied VM are guaranteed to be 'full images' - i.e. not part of a CoW chain.",
            [NewNameLabel], [NewNameDescription, SrUuid], CopyAsync),
        new("snapshot-revert", "Revert an existing VM to a previous checkpointed or snapshotted state.",
            [], [CliParams.Uuid, "snapshot-uuid"], RevertAsync) { Standard = true },
        Selecting("vm-uninstall",
            "Uninstall a VM. This operation will destroy those VDIs that are marked RW and connected to this VM only. To simply destroy the VM record, use vm-destroy.",
            [], [CliParams.Force], UninstallAsync),
        Selecting("vm-disk-add",
            "Add a new disk to the selected VM(s). The device field should be selected from the field 'allowed-VBD-devices' of the VM.",
            ["disk-size", "device"], [SrUuid], DiskAddAsync),
        Selecting("vm-cd-insert",
            "Insert a CD into the virtual CD drive. This command will only work if there is one and only one empty CD device attached to the VM. When there are two or more empty CD devices, please use the command 'vbd-insert' and specify the uuids of the VBD and of the VDI to insert.",
            ["cd-name"], [], CdInsertAsync),
        Selecting("vm-cd-eject",
            "Eject a CD from the virtual CD drive. This command will only work if there is one and only one CD attached to the VM. When there are two or more CDs, please use the command 'vbd-eject' and specify the uuid of the VBD.",
            [], [], CdEjectAsync),
        Selecting("vm-vif-list", "List the VIFs present on selected VM.", [], [], VifListAsync),
        new("vif-create",
            "Create a VIF. Appropriate values for the device are listed in the parameter 'allowed-VIF-devices' on the VM. If specified, the MAC parameter is of the form aa:bb:cc:dd:ee:ff. If MAC is not specified the server will choose an appropriate MAC automatically.",
            ["device", "network-uuid", "vm-uuid"], ["mac"], VifCreateAsync),
        new("vif-plug", "Attempt to attach the VIF while the VM is in the running state.", [CliParams.Uuid], [], async run =>
            await run.CallAsync("VIF.plug", await StorageValues.ByUuidAsync(run, "VIF", run.Required(CliParams.Uuid)).ConfigureAwait(false)).ConfigureAwait(false)),
        new("vif-unplug", "Attempt to detach the VIF while the VM is in the running state.", [CliParams.Uuid], [CliParams.Force], async run =>
        {
            var vif = await StorageValues.ByUuidAsync(run, "VIF", run.Required(CliParams.Uuid)).ConfigureAwait(false);
            await run.CallAsync(CliValues.BoolParam(run, CliParams.Force) ? "VIF.unplug_force" : "VIF.unplug", vif).ConfigureAwait(false);
        }),
        new("event-wait", "Wait for the event that satisfies the conditions given on the command line.", ["class"], [], EventWaitAsync),
        new("task-cancel", "Set a task to cancelling and return.", [CliParams.Uuid], [], async run =>
        {
            var task = await run.CallAsync("task.get_by_uuid", run.Required(CliParams.Uuid)).ConfigureAwait(false);
            await run.CallAsync("task.cancel", task).ConfigureAwait(false);
        }),
    ];

    private static CliCommand Selecting(string name, string help, IReadOnlyList<string> required, IReadOnlyList<string> optional, Func<CliRun, ValueTask> run) =>
        new(name, help, required, optional, run) { Standard = true, TakesSelectors = true };

    private static async ValueTask Void<T>(ValueTask<T> call) => await call.ConfigureAwait(false);

    private static string Str(object? value) => value as string ?? "";

    private static IReadOnlyDictionary<object, object?> Map(object? value) => value as IReadOnlyDictionary<object, object?> ?? new Dictionary<object, object?>();

    private static IReadOnlyList<string> Refs(object? value) => (value as IEnumerable<object?> ?? []).Select(Str).ToList();

    private static async ValueTask<string> UuidOfAsync(CliRun run, string cls, string reference) =>
        Str(await run.CallAsync($"{cls}.get_uuid", reference).ConfigureAwait(false));

    // --- power -----------------------------------------------------------------------------

    private static async ValueTask StartAsync(CliRun run)
    {
        var paused = CliValues.BoolParam(run, Paused);
        var force = CliValues.BoolParam(run, CliParams.Force);
        var on = run.Optional(On);
        // vm-start is the one power operation that may name a control domain.
        await CliSelectors.DoAsync(run, CliSelector.Vm(includeControlDomains: true), [On, Paused, Progress], async vm =>
        {
            if (on is not null)
            {
                var host = await HostByNameOrIdAsync(run, on).ConfigureAwait(false);
                await CliTasks.RunAsync(run, "VM.start_on", vm.Ref, host, paused, force).ConfigureAwait(false);
            }
            else
            {
                await NoHostsReportAsync(run, () => CliTasks.RunAsync(run, "VM.start", vm.Ref, paused, force)).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }

    private static async ValueTask ResumeAsync(CliRun run)
    {
        var force = CliValues.BoolParam(run, CliParams.Force);
        var on = run.Optional(On);
        await CliSelectors.DoAsync(run, CliSelector.Vm(), [On, Progress], async vm =>
        {
            if (on is not null)
            {
                var host = await HostByNameOrIdAsync(run, on).ConfigureAwait(false);
                await CliTasks.RunAsync(run, "VM.resume_on", vm.Ref, host, false, force).ConfigureAwait(false);
            }
            else
            {
                await NoHostsReportAsync(run, () => CliTasks.RunAsync(run, "VM.resume", vm.Ref, false, force)).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }

    // Real xe explains NO_HOSTS_AVAILABLE on standard output before the error itself.
    private static async ValueTask NoHostsReportAsync(CliRun run, Func<ValueTask<object?>> call)
    {
        try
        {
            await call().ConfigureAwait(false);
        }
        catch (XenApiException e) when (e.Code == ErrorCodes.NoHostsAvailable)
        {
            await run.PrintAsync("There are no suitable hosts to start this VM on.").ConfigureAwait(false);
            await run.PrintAsync("The following table provides per-host reasons for why the VM could not be started:").ConfigureAwait(false);
            await run.PrintAsync("").ConfigureAwait(false);
            throw;
        }
    }

    // The first host whose name-label or uuid is the word given.
    private static async ValueTask<string> HostByNameOrIdAsync(CliRun run, string name)
    {
        foreach (var (reference, record) in Map(await run.CallAsync("host.get_all_records").ConfigureAwait(false)))
        {
            var host = Map(record);
            if (Str(host.GetValueOrDefault("name_label")) == name || Str(host.GetValueOrDefault("uuid")) == name)
            {
                return Str(reference);
            }
        }
        throw new CliFailure($"Error: Host {name} not found");
    }

    // --- clone, snapshot, copy, revert --------------------------------------------------------

    private static async ValueTask CloneLikeAsync(CliRun run, CliSelector selector, Func<CliRecord, string, ValueTask<object?>> clone,
        IReadOnlyCollection<string>? ignore = null, bool multiple = true)
    {
        var name = run.Required(NewNameLabel);
        var created = await CliSelectors.DoAsync(run, selector, ignore ?? [NewNameLabel, NewNameDescription, "ignore-vdi-uuids"],
            async vm => Str(await clone(vm, name).ConfigureAwait(false)), multiple).ConfigureAwait(false);
        if (run.Optional(NewNameDescription) is { } description)
        {
            await run.CallAsync("VM.set_name_description", created[0], description).ConfigureAwait(false);
        }
        foreach (var vm in created)
        {
            await run.PrintAsync(await UuidOfAsync(run, "VM", vm).ConfigureAwait(false)).ConfigureAwait(false);
        }
    }

    private static async ValueTask SnapshotAsync(CliRun run)
    {
        var ignored = new List<string>();
        if (run.Optional("ignore-vdi-uuids") is { } uuids)
        {
            foreach (var uuid in uuids.Split(','))
            {
                ignored.Add(Str(await run.CallAsync("VDI.get_by_uuid", uuid).ConfigureAwait(false)));
            }
        }
        await CloneLikeAsync(run, CliSelector.Vm(), (vm, name) => run.CallAsync("VM.snapshot", vm.Ref, name, ignored.ToArray())).ConfigureAwait(false);
    }

    private static async ValueTask CopyAsync(CliRun run)
    {
        var sr = run.Optional(SrUuid) is { } uuid ? Str(await run.CallAsync("SR.get_by_uuid", uuid).ConfigureAwait(false)) : XType.NullRef;
        await CloneLikeAsync(run, CliSelector.Vm(includeTemplates: true), (vm, name) => run.CallAsync("VM.copy", vm.Ref, name, sr),
            [NewNameLabel, SrUuid, NewNameDescription], multiple: false).ConfigureAwait(false);
    }

    private static async ValueTask RevertAsync(CliRun run)
    {
        var uuid = run.Optional("snapshot-uuid") ?? run.Optional(CliParams.Uuid)
            ?? throw new CliFailure("Error: Required parameter not found: snapshot-uuid or uuid.");
        var snapshot = Str(await run.CallAsync("VM.get_by_uuid", uuid).ConfigureAwait(false));
        if (!(bool)(await run.CallAsync("VM.get_is_a_snapshot", snapshot).ConfigureAwait(false))!)
        {
            throw new CliFailure($"Error: This operation can only be performed on a VM snapshot. {uuid} is not a VM snapshot.");
        }
        await run.CallAsync("VM.revert", snapshot).ConfigureAwait(false);
    }

    // --- install ---------------------------------------------------------------------------

    private static async ValueTask InstallAsync(CliRun run)
    {
        var template = await FindTemplateAsync(run).ConfigureAwait(false);
        if (!(bool)(await run.CallAsync("VM.get_is_a_template", template).ConfigureAwait(false))!)
        {
            throw new CliFailure("Error: Can only install from templates");
        }
        var name = run.Required(NewNameLabel);

        // The SR: none for a snapshot (its disks stay beside the snapshot's), else sr-uuid and/or sr-name-label.
        string? sr = null;
        if ((bool)(await run.CallAsync("VM.get_is_a_snapshot", template).ConfigureAwait(false))!)
        {
            if (run.Args.Has(SrNameLabel) || run.Args.Has(SrUuid))
            {
                throw new CliFailure("Error: Do not use the sr-name-label or sr-uuid argument when installing from a snapshot. By default, it will install each new disk on the same SR as the corresponding snapshot disks.");
            }
            sr = XType.NullRef;
        }
        else if (run.Optional(SrUuid) is { } srUuid)
        {
            sr = Str(await run.CallAsync("SR.get_by_uuid", srUuid).ConfigureAwait(false));
        }
        if (run.Optional(SrNameLabel) is { } srName)
        {
            var named = Refs(await run.CallAsync("SR.get_by_name_label", srName).ConfigureAwait(false));
            if (named.Count == 0)
            {
                throw new CliFailure("Error: No SR with that name-label found");
            }
            if (sr is not null)
            {
                if (!named.Contains(sr))
                {
                    throw new CliFailure("Error: SR specified via sr-uuid doesn't have the name specified via sr-name-label");
                }
            }
            else
            {
                sr = named.Count == 1 ? named[0] : throw new CliFailure("Error: Multiple SRs with that name-label found");
            }
        }
        var valid = sr is not null && sr != XType.NullRef;
        var suspendSr = valid ? sr! : Str(await run.CallAsync("VM.get_suspend_SR", template).ConfigureAwait(false));
        string srUuidForDisks;
        if (valid)
        {
            srUuidForDisks = await UuidOfAsync(run, "SR", sr!).ConfigureAwait(false);
        }
        else if (await DefaultSrUuidAsync(run).ConfigureAwait(false) is { } defaultSr)
        {
            srUuidForDisks = defaultSr;
        }
        else if (Map(await run.CallAsync("VM.get_other_config", template).ConfigureAwait(false)).ContainsKey("disks"))
        {
            throw new CliFailure("Error: Failed to find a valid default SR for the Pool. Please provide an sr-name-label or sr-uuid parameter.");
        }
        else
        {
            srUuidForDisks = "";
        }

        // A copy when an SR was named, so the disks land there; a (fast) clone otherwise.
        var vm = Str(valid
            ? await run.CallAsync("VM.copy", template, name, sr).ConfigureAwait(false)
            : await run.CallAsync("VM.clone", template, name).ConfigureAwait(false));
        try
        {
            await run.CallAsync("VM.set_name_description", vm, InstalledDescription).ConfigureAwait(false);
            await run.CallAsync("VM.set_suspend_SR", vm, suspendSr).ConfigureAwait(false);
            await RewriteProvisioningAsync(run, vm, srUuidForDisks).ConfigureAwait(false);
            await SetVendorDeviceAsync(run, template, vm).ConfigureAwait(false);
            await run.CallAsync("VM.provision", vm).ConfigureAwait(false);
            if (run.Optional("copy-bios-strings-from") is { } hostUuid)
            {
                var host = await run.CallAsync("host.get_by_uuid", hostUuid).ConfigureAwait(false);
                await run.CallAsync("VM.copy_bios_strings", vm, host).ConfigureAwait(false);
            }
            await run.PrintAsync(await UuidOfAsync(run, "VM", vm).ConfigureAwait(false)).ConfigureAwait(false);
        }
        catch
        {
            try
            {
                await run.CallAsync("VM.destroy", vm).ConfigureAwait(false);
            }
            catch (XenApiException)
            {
                // The original failure is the one to report.
            }
            throw;
        }
    }

    // template-uuid=, then template-name-label= / template-name=, then template= (a uuid, else a name).
    private static async ValueTask<string> FindTemplateAsync(CliRun run)
    {
        if (run.Optional("template-uuid") is { } templateUuid)
        {
            try
            {
                return Str(await run.CallAsync("VM.get_by_uuid", templateUuid).ConfigureAwait(false));
            }
            catch (XenApiException)
            {
                throw new CliFailure("Error: Cannot find template");
            }
        }
        if ((run.Optional("template-name-label") ?? run.Optional("template-name")) is { } templateName)
        {
            return await TemplateByNameAsync(run, templateName).ConfigureAwait(false);
        }
        if (run.Optional("template") is { } either)
        {
            try
            {
                return Str(await run.CallAsync("VM.get_by_uuid", either).ConfigureAwait(false));
            }
            catch (XenApiException)
            {
                return await TemplateByNameAsync(run, either).ConfigureAwait(false);
            }
        }
        throw new CliFailure("Error: Template must be specified by parameter 'template-uuid', 'template-name', 'template-name-label' or 'template'");
    }

    private static async ValueTask<string> TemplateByNameAsync(CliRun run, string name)
    {
        var matching = (await CliRecords.AllAsync(run, ApiSchema.Class("VM")).ConfigureAwait(false))
            .Where(r => Str(r.Values.GetValueOrDefault("name_label")) == name
                && r.Values.GetValueOrDefault("is_a_template") is true
                && r.Values.GetValueOrDefault("is_control_domain") is false)
            .ToList();
        return matching.Count switch
        {
            0 => throw new CliFailure("Error: No templates matched"),
            1 => matching[0].Ref,
            _ => throw new CliFailure("Error: More than one matching template found"),
        };
    }

    private static async ValueTask<string?> DefaultSrUuidAsync(CliRun run)
    {
        try
        {
            var pool = Refs(await run.CallAsync("pool.get_all").ConfigureAwait(false))[0];
            var sr = Str(await run.CallAsync("pool.get_default_SR", pool).ConfigureAwait(false));
            return await UuidOfAsync(run, "SR", sr).ConfigureAwait(false);
        }
        catch (Exception e) when (e is XenApiException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    // Points every disk of other-config:disks at the chosen SR, so VM.provision creates them there.
    private static async ValueTask RewriteProvisioningAsync(CliRun run, string vm, string srUuid)
    {
        if (Map(await run.CallAsync("VM.get_other_config", vm).ConfigureAwait(false)).GetValueOrDefault("disks") is not string disks)
        {
            return;
        }
        var xml = XElement.Parse(disks);
        if (xml.Name.LocalName == "provision" && !xml.HasAttributes)
        {
            foreach (var disk in xml.Elements("disk").Where(d => !d.HasElements))
            {
                if (disk.Attribute("sr") is { } attribute)
                {
                    attribute.Value = srUuid;
                }
            }
        }
        await run.CallAsync("VM.remove_from_other_config", vm, "disks").ConfigureAwait(false);
        await run.CallAsync("VM.add_to_other_config", vm, "disks", xml.ToString(SaveOptions.DisableFormatting)).ConfigureAwait(false);
    }

    // has-vendor-device as the template recommends, unless the pool's policy forbids it.
    private static async ValueTask SetVendorDeviceAsync(CliRun run, string template, string vm)
    {
        var recommendations = Str(await run.CallAsync("VM.get_recommendations", template).ConfigureAwait(false));
        var recommended = false;
        try
        {
            recommended = recommendations.Length > 0 && XElement.Parse(recommendations).Elements("restriction")
                .Any(r => (string?)r.Attribute("field") == "has-vendor-device" && (string?)r.Attribute("value") == "true");
        }
        catch (System.Xml.XmlException)
        {
            // Unreadable recommendations recommend nothing.
        }
        var pool = Refs(await run.CallAsync("pool.get_all").ConfigureAwait(false)).FirstOrDefault();
        var policyAllows = pool is null || !(bool)(await run.CallAsync("pool.get_policy_no_vendor_device", pool).ConfigureAwait(false))!;
        try
        {
            await run.CallAsync("VM.set_has_vendor_device", vm, recommended && policyAllows).ConfigureAwait(false);
        }
        catch (XenApiException e) when (e.Code == ErrorCodes.LicenceRestriction)
        {
            var label = Str(await run.CallAsync("VM.get_name_label", vm).ConfigureAwait(false));
            await run.Console.PrintStderrAsync($"Note: the VM template recommends setting has-vendor-device=true (to provide the option of obtaining PV drivers through Windows Update), but a suitable licence has not been deployed for this host. Ignoring this recommendation and continuing with installation of VM \"{label}\"...\n").ConfigureAwait(false);
        }
    }

    // --- uninstall -------------------------------------------------------------------------

    private static async ValueTask UninstallAsync(CliRun run)
    {
        var vms = await CliSelectors.DoAsync(run, CliSelector.Vm(), [], vm => ValueTask.FromResult(vm.Ref)).ConfigureAwait(false);
        var all = new List<string>(vms);
        foreach (var vm in vms)
        {
            all.AddRange(Refs(await run.CallAsync("VM.get_snapshots", vm).ConfigureAwait(false)));
        }
        var lines = new List<string>();
        var destroys = new List<Func<ValueTask>>();
        foreach (var vm in all)
        {
            var record = Map(await run.CallAsync("VM.get_record", vm).ConfigureAwait(false));
            var owned = new List<string>();
            foreach (var vbd in Refs(record.GetValueOrDefault("VBDs")))
            {
                try
                {
                    var otherConfig = Map(await run.CallAsync("VBD.get_other_config", vbd).ConfigureAwait(false));
                    var vdi = Str(await run.CallAsync("VBD.get_VDI", vbd).ConfigureAwait(false));
                    await UuidOfAsync(run, "VDI", vdi).ConfigureAwait(false); // an empty drive has no disk to destroy
                    if (otherConfig.ContainsKey(OwnerKey))
                    {
                        owned.Add(vdi);
                    }
                }
                catch (XenApiException)
                {
                    // A drive without a disk, or one gone meanwhile.
                }
            }
            var suspendVdi = Str(record.GetValueOrDefault("suspend_VDI"));
            try
            {
                await UuidOfAsync(run, "VDI", suspendVdi).ConfigureAwait(false);
            }
            catch (XenApiException)
            {
                suspendVdi = XType.NullRef;
            }
            lines.Add($"VM : {Str(record.GetValueOrDefault("uuid"))} ({Str(record.GetValueOrDefault("name_label"))})");
            foreach (var vdi in suspendVdi == XType.NullRef ? owned : [.. owned, suspendVdi])
            {
                var disk = Map(await run.CallAsync("VDI.get_record", vdi).ConfigureAwait(false));
                var shared = Refs(disk.GetValueOrDefault("VBDs")).Count >= 2 ? " ** WARNING: disk is shared by other VMs" : "";
                lines.Add($"VDI: {Str(disk.GetValueOrDefault("uuid"))} ({Str(disk.GetValueOrDefault("name_label"))}) {shared}");
            }
            destroys.Add(async () =>
            {
                if (!string.Equals(Str(await run.CallAsync("VM.get_power_state", vm).ConfigureAwait(false)), "halted", StringComparison.OrdinalIgnoreCase))
                {
                    await run.CallAsync("VM.hard_shutdown", vm).ConfigureAwait(false);
                }
                await run.CallAsync("VM.destroy", vm).ConfigureAwait(false);
                foreach (var vdi in owned)
                {
                    await run.CallAsync("VDI.destroy", vdi).ConfigureAwait(false);
                }
                if (suspendVdi != XType.NullRef)
                {
                    try
                    {
                        await run.CallAsync("VDI.destroy", suspendVdi).ConfigureAwait(false);
                    }
                    catch (XenApiException)
                    {
                        // Real xe lets a suspend image that will not go stay.
                    }
                }
            });
        }
        await run.PrintAsync("The following items are about to be destroyed").ConfigureAwait(false);
        foreach (var line in lines)
        {
            await run.PrintAsync(line).ConfigureAwait(false);
        }
        if (!CliValues.BoolParam(run, CliParams.Force) && !await UserSaysYesAsync(run).ConfigureAwait(false))
        {
            return;
        }
        foreach (var destroy in destroys)
        {
            await destroy().ConfigureAwait(false);
        }
        await run.PrintAsync("All objects destroyed").ConfigureAwait(false);
    }

    // Real xe's user_says_yes: anything but "yes" (trimmed, any case) aborts, and that is no error.
    private static async ValueTask<bool> UserSaysYesAsync(CliRun run)
    {
        await run.PrintAsync("Type 'yes' to continue").ConfigureAwait(false);
        var response = run.Console is ICliPromptConsole prompt ? await prompt.PromptAsync().ConfigureAwait(false) : "";
        if (response.Trim().Equals("yes", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }
        await run.PrintAsync($"Aborted (you typed: '{response}')").ConfigureAwait(false);
        return false;
    }

    // --- devices ---------------------------------------------------------------------------

    private static async ValueTask DiskAddAsync(CliRun run)
    {
        var size = CliValues.ParseBytes("disk-size", run.Required("disk-size"));
        var device = run.Required("device");
        string sr;
        if (run.Optional(SrUuid) is { } srUuid)
        {
            sr = Str(await run.CallAsync("SR.get_by_uuid", srUuid).ConfigureAwait(false));
        }
        else
        {
            var defaultSr = await DefaultSrUuidAsync(run).ConfigureAwait(false)
                ?? throw new CliFailure("Error: No default Pool SR set; you must specify an SR on the commandline");
            sr = Str(await run.CallAsync("SR.get_by_uuid", defaultSr).ConfigureAwait(false));
        }
        await CliSelectors.DoAsync(run, CliSelector.Vm(), [SrUuid, "device", "disk-size"], async vm =>
        {
            var disk = NewRecord("VDI");
            disk["name_label"] = CreatedByXe;
            disk["name_description"] = CreatedByXe;
            disk["SR"] = sr;
            disk["virtual_size"] = size;
            disk["type"] = "user";
            disk["sharable"] = false;
            disk["read_only"] = false;
            disk["sm_config"] = new Dictionary<string, object?> { ["vmhint"] = vm.Uuid };
            var vdi = Str(await run.CallAsync("VDI.create", disk).ConfigureAwait(false));
            try
            {
                var vbd = NewRecord("VBD");
                vbd["VM"] = vm.Ref;
                vbd["VDI"] = vdi;
                vbd["userdevice"] = device;
                vbd["bootable"] = false;
                vbd["mode"] = "RW";
                vbd["type"] = "Disk";
                vbd["unpluggable"] = true;
                vbd["empty"] = false;
                vbd["other_config"] = new Dictionary<string, object?> { [OwnerKey] = "" };
                var created = Str(await run.CallAsync("VBD.create", vbd).ConfigureAwait(false));
                try
                {
                    await run.CallAsync("VBD.plug", created).ConfigureAwait(false);
                }
                catch (XenApiException)
                {
                    // Created but not hot-plugged (a halted VM, say): it attaches at the next start.
                }
            }
            catch
            {
                await run.CallAsync("VDI.destroy", vdi).ConfigureAwait(false);
                throw;
            }
        }).ConfigureAwait(false);
    }

    private static async ValueTask CdInsertAsync(CliRun run)
    {
        var name = run.Required("cd-name");
        var cds = new List<string>();
        foreach (var vdi in Refs(await run.CallAsync("VDI.get_by_name_label", name).ConfigureAwait(false)))
        {
            var sr = Str(await run.CallAsync("VDI.get_SR", vdi).ConfigureAwait(false));
            if (Str(await run.CallAsync("SR.get_content_type", sr).ConfigureAwait(false)) == "iso")
            {
                cds.Add(vdi);
            }
        }
        var cd = cds.Count switch
        {
            0 => throw new CliFailure($"Error: CD {name} not found"),
            1 => cds[0],
            _ => throw new CliFailure($"Error: Multiple CDs named {name} found. Please use vbd-insert and specify uuids"),
        };
        await CliSelectors.DoAsync(run, CliSelector.Vm(), ["cd-name"], async vm =>
        {
            var empty = await CdDrivesAsync(run, vm, emptyOnly: true).ConfigureAwait(false);
            switch (empty.Count)
            {
                case 0:
                    throw new XenApiException(ErrorCodes.VmNoEmptyCdVbd, vm.Ref);
                case 1:
                    await run.CallAsync("VBD.insert", empty[0], cd).ConfigureAwait(false);
                    break;
                default:
                    throw new CliFailure("Error: Two or more empty CD devices found. Please use vbd-insert");
            }
        }).ConfigureAwait(false);
    }

    private static async ValueTask CdEjectAsync(CliRun run) =>
        await CliSelectors.DoAsync(run, CliSelector.Vm(), [], async vm =>
        {
            var drives = await CdDrivesAsync(run, vm, emptyOnly: false).ConfigureAwait(false);
            switch (drives.Count)
            {
                case 0:
                    throw new CliFailure("Error: No CDs found");
                case 1:
                    await run.CallAsync("VBD.eject", drives[0]).ConfigureAwait(false);
                    break;
                default:
                    throw new CliFailure("Error: Two or more CDs found. Please use vbd-eject");
            }
        }).ConfigureAwait(false);

    private static async ValueTask<IReadOnlyList<string>> CdDrivesAsync(CliRun run, CliRecord vm, bool emptyOnly)
    {
        var drives = new List<string>();
        foreach (var vbd in Refs(vm.Values.GetValueOrDefault("VBDs")))
        {
            if (Str(await run.CallAsync("VBD.get_type", vbd).ConfigureAwait(false)) == "CD"
                && (!emptyOnly || (bool)(await run.CallAsync("VBD.get_empty", vbd).ConfigureAwait(false))!))
            {
                drives.Add(vbd);
            }
        }
        return drives;
    }

    private static async ValueTask VifListAsync(CliRun run)
    {
        IReadOnlyList<string>? fields = run.Optional(CliParams.Params) switch
        {
            null => ["uuid", "device", "MAC", "network-uuid", "network-name-label", "vm-name-label"],
            "all" => null,
            var named => named.Split(','),
        };
        var vifClass = ApiSchema.Class("VIF");
        // Real xe lists every selected VM's VIFs without asking for --multiple.
        await CliSelectors.DoAsync(run, CliSelector.Vm(), [CliParams.Params], async vm =>
        {
            var vifs = new List<CliRecord>();
            foreach (var vif in Refs(vm.Values.GetValueOrDefault("VIFs")))
            {
                vifs.Add(new CliRecord(vif, vifClass, Map(await run.CallAsync("VIF.get_record", vif).ConfigureAwait(false))));
            }
            await CliRecords.PrintAsync(run, vifs, fields).ConfigureAwait(false);
        }, alwaysMultiple: true).ConfigureAwait(false);
    }

    private static async ValueTask VifCreateAsync(CliRun run)
    {
        var mac = run.Optional("mac") ?? "";
        if (mac == "random")
        {
            // Real xe draws one byte for all six octets, then makes it unicast and locally administered.
            var octet = (Random.Shared.Next(256) | 0x2) & ~0x1;
            mac = string.Join(":", Enumerable.Repeat(octet.ToString("x2", CultureInfo.InvariantCulture), 6));
        }
        var vm = await run.CallAsync("VM.get_by_uuid", run.Required("vm-uuid")).ConfigureAwait(false);
        var network = await run.CallAsync("network.get_by_uuid", run.Required("network-uuid")).ConfigureAwait(false);
        var mtu = await run.CallAsync("network.get_MTU", network).ConfigureAwait(false);
        var record = NewRecord("VIF");
        record["device"] = run.Required("device");
        record["network"] = network;
        record["VM"] = vm;
        record["MAC"] = mac;
        record["MTU"] = mtu;
        record["locking_mode"] = "network_default";
        var vif = Str(await run.CallAsync("VIF.create", record).ConfigureAwait(false));
        await run.PrintAsync(await UuidOfAsync(run, "VIF", vif).ConfigureAwait(false)).ConfigureAwait(false);
    }

    // A constructor record holding the class's defaults, in the shapes a call's arguments take.
    private static Dictionary<string, object?> NewRecord(string cls) =>
        ApiSchema.Class(cls).MinimalRecord().ToDictionary(p => p.Key, p => Wire(p.Value));

    private static object? Wire(object? value) => value switch
    {
        IReadOnlyDictionary<object, object?> map => map.ToDictionary(p => XType.ToDisplayString(p.Key), p => Wire(p.Value)),
        _ => value,
    };

    // --- events ----------------------------------------------------------------------------

    // The CLI's class names event-wait listens on, and the API classes they are.
    private static readonly Dictionary<string, string> EventClasses = new(StringComparer.Ordinal)
    {
        ["vm"] = "VM", ["vdi"] = "VDI", ["sr"] = "SR", ["host"] = "host", ["network"] = "network", ["vif"] = "VIF",
        ["pif"] = "PIF", ["vbd"] = "VBD", ["pbd"] = "PBD", ["pool"] = "pool", ["task"] = "task", ["subject"] = "subject",
        ["role"] = "role", ["secret"] = "secret", ["vmss"] = "VMSS",
    };

    private static async ValueTask EventWaitAsync(CliRun run)
    {
        var name = run.Required("class");
        var conditions = run.Args.Params
            .Where(p => p.Key != "class" && !IsStandard(p.Key))
            .Select(p => p.Value.StartsWith("/=", StringComparison.Ordinal)
                ? (Key: p.Key, Value: p.Value[2..], Equal: false)
                : (Key: p.Key, Value: p.Value, Equal: true))
            .ToList();
        if (!EventClasses.TryGetValue(name, out var apiName))
        {
            throw new CliFailure($"Error: Cli listening for class '{name}' not currently implemented");
        }
        var cls = ApiSchema.Class(apiName);

        bool Satisfies(CliRecord record) => conditions.All(c =>
        {
            if (!record.Class.Fields.Any(f => CliRecords.CliName(f) == c.Key))
            {
                throw new CliFailure($"Error: key missing: {c.Key}");
            }
            return CliRecords.Matches(record, [new KeyValuePair<string, string>(c.Key, c.Value)]) == c.Equal;
        });

        if ((await CliRecords.AllAsync(run, cls).ConfigureAwait(false)).Any(Satisfies))
        {
            return;
        }
        var token = "";
        while (true)
        {
            var batch = Map(await run.CallAsync("event.from", new[] { name }, token, 30.0).ConfigureAwait(false));
            token = Str(batch.GetValueOrDefault("token"));
            foreach (var change in (batch.GetValueOrDefault("events") as IEnumerable<object?> ?? []).Select(Map))
            {
                if (change.GetValueOrDefault("snapshot") is IReadOnlyDictionary<object, object?> snapshot
                    && Satisfies(new CliRecord(Str(change.GetValueOrDefault("ref")), cls, snapshot)))
                {
                    return;
                }
            }
        }
    }

    private static bool IsStandard(string key) =>
        key is "server" or CliParams.Password or "port" or CliParams.Username or CliParams.Minimal or CliParams.Force
            or CliParams.Multiple or CliParams.All or "message-priority" or "trace";
}
