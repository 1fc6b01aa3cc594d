using System.Globalization;
using Xapi.Model;
using static Xapi.Cli.Commands.CliValues;
using static Xapi.Cli.Commands.StorageValues;

namespace Xapi.Cli.Commands;

/// <summary>
/// The storage commands (VBDs, VDIs, SRs, PBDs), with real xe's parameters, help texts, checks
/// and output: creating commands print the new object's uuid, the others print nothing.
/// </summary>
internal static class StorageCommands
{
    public const string ImportRawVdiPath = "/import_raw_vdi";
    public const string ExportRawVdiPath = "/export_raw_vdi";

    // Real xe stops waiting for a rejected unplug this often to see whether the guest let go.
    private static readonly TimeSpan UnplugPoll = TimeSpan.FromSeconds(5);

    public static IEnumerable<CliCommand> All() =>
    [
        new("vbd-create",
            "Create a VBD. Appropriate values for the device field are listed in the parameter 'allowed-VBD-devices' on the VM. If no VDI is specified, an empty VBD will be created. The type parameter can be 'Disk', 'CD' or 'Floppy', and the mode is 'RO' or 'RW'.",
            ["vm-uuid", "device"], ["vdi-uuid", "bootable", "type", "mode", "unpluggable"], VbdCreateAsync),
        new("vbd-insert", "Insert new media into the drive represented by a VBD.", ["uuid", "vdi-uuid"], [], VbdInsertAsync),
        new("vbd-eject", "Remove the media from the drive represented by a VBD.", ["uuid"], [], run => CallOnAsync(run, "VBD", "VBD.eject")),
        new("vbd-plug", "Attempt to attach the VBD while the VM is in the running state.",
            ["uuid"], [], run => CallOnAsync(run, "VBD", "VBD.plug")),
        new("vbd-unplug",
            "Attempt to detach the VBD while the VM is in the running state. If the optional argument 'timeout=N' is given then the command will wait for up to 'N' seconds for the unplug to complete. If the optional argument 'force' is given then it will be immediately unplugged.",
            ["uuid"], ["timeout", "force"], VbdUnplugAsync),
        new("vdi-create", "Create a VDI. Type is 'system' 'user' 'suspend' or 'crashdump'.",
            ["sr-uuid", "name-label", "virtual-size"], ["sm-config:", "sharable", "tags:", "type"], VdiCreateAsync),
        new("vdi-destroy", "Destroy a VDI.", ["uuid"], [], run => CallOnAsync(run, "VDI", "VDI.destroy")),
        new("vdi-resize", "Resize a VDI.", ["uuid", "disk-size"], ["online"], VdiResizeAsync),
        new("vdi-copy",
            "Copy either a full VDI or the block differences between two VDIs either into a fresh VDI in a specified SR or into an existing VDI.",
            ["uuid"], ["sr-uuid", "base-vdi-uuid", "into-vdi-uuid"], VdiCopyAsync),
        new("vdi-snapshot", "Snapshot a specified VDI.", ["uuid"], ["driver-params-"], VdiSnapshotAsync),
        new("vdi-clone", "Clone a specified VDI.", ["uuid"], ["driver-params-", "new-name-label", "new-name-description"], VdiCloneAsync),
        new("vdi-import", "Import a raw VDI.", ["uuid", "filename"], ["format", "progress"], VdiImportAsync),
        new("vdi-export", "Export a VDI.", ["uuid", "filename"], ["format", "base", "progress"], VdiExportAsync),
        new("sr-create",
            "Create an SR, also a PBD. The device-config parameters can be specified by device-config:foo=baa, for example.",
            ["name-label", "type"], ["name-description", "host-uuid", "device-config:", "shared", "physical-size", "content-type", "sm-config:"], SrCreateAsync),
        new("sr-introduce", "Introduces an SR (but does not create any PBDs).",
            ["name-label", "type", "uuid"], ["name-description", "shared", "content-type"], SrIntroduceAsync),
        new("sr-forget", "Forget about the SR.", ["uuid"], [], run => CallOnAsync(run, "SR", "SR.forget")),
        new("sr-destroy", "Destroy the SR.", ["uuid"], [], run => CallOnAsync(run, "SR", "SR.destroy")),
        new("sr-scan", "Force an SR scan, syncing database with VDIs present in underlying storage substrate.",
            ["uuid"], [], run => CallOnAsync(run, "SR", "SR.scan")),
        new("pbd-plug",
            "Attempt to plug in the PBD to the host. If this succeeds then the referenced SR (and the VDIs contained within) should be visible to the host.",
            ["uuid"], [], run => CallOnAsync(run, "PBD", "PBD.plug")),
        new("pbd-unplug",
            "Attempt to unplug the PBD from the host. If this succeeds then the referenced SR (and the VDIs contained within) should not be visible to the host.",
            ["uuid"], [], run => CallOnAsync(run, "PBD", "PBD.unplug")),
    ];

    /// <summary>The object named by <c>uuid=</c>, then one call on it; nothing printed.</summary>
    private static async ValueTask CallOnAsync(CliRun run, string cls, string method)
    {
        var self = await ByUuidAsync(run, cls, run.Required(CliParams.Uuid)).ConfigureAwait(false);
        await run.CallAsync(method, self).ConfigureAwait(false);
    }

    private static async ValueTask VbdCreateAsync(CliRun run)
    {
        var vm = await ByUuidAsync(run, "VM", run.Required("vm-uuid")).ConfigureAwait(false);
        var vdiUuid = run.Optional("vdi-uuid");
        var empty = vdiUuid is null;
        var vdi = empty ? XType.NullRef : await ByUuidAsync(run, "VDI", vdiUuid!).ConfigureAwait(false);
        var bootable = BoolParam(run, "bootable");
        var mode = run.Optional("mode") is { } m
            ? m.ToLowerInvariant() switch
            {
                "ro" => "RO",
                "rw" => "RW",
                var other => throw new CliFailure($"Error: Unknown mode: {other} (should be \"ro\" or \"rw\""),
            }
            : "RW";
        var type = run.Optional("type") is { } t
            ? t.ToLowerInvariant() switch
            {
                "cd" => "CD",
                "disk" => "Disk",
                "floppy" => "Floppy",
                var other => throw new CliFailure($"Error: \"Unknown type: {other} (should be \"cd\", \"disk\" or \"floppy\""),
            }
            : "Disk";
        var unpluggable = BoolParam(run, "unpluggable", fallback: true);
        if (type == "Disk" && empty)
        {
            throw new CliFailure("Error: Empty VBDs can only be made for type=CD");
        }
        var record = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["VM"] = vm,
            ["VDI"] = vdi,
            ["userdevice"] = run.Required("device"),
            ["bootable"] = bootable,
            ["mode"] = mode,
            ["type"] = type,
            ["unpluggable"] = unpluggable,
            ["empty"] = empty,
            ["qos_algorithm_type"] = "",
            ["qos_algorithm_params"] = new Dictionary<string, object?>(),
            ["other_config"] = new Dictionary<string, object?>(),
            ["device"] = "",
            ["currently_attached"] = false,
        };
        var vbd = (string)(await run.CallAsync("VBD.create", record).ConfigureAwait(false))!;
        await run.PrintAsync(await UuidOfAsync(run, "VBD", vbd).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private static async ValueTask VbdInsertAsync(CliRun run)
    {
        var vbd = await ByUuidAsync(run, "VBD", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var vdi = await ByUuidAsync(run, "VDI", run.Required("vdi-uuid")).ConfigureAwait(false);
        await run.CallAsync("VBD.insert", vbd, vdi).ConfigureAwait(false);
    }

    private static async ValueTask VbdUnplugAsync(CliRun run)
    {
        var vbd = await ByUuidAsync(run, "VBD", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var timeout = 0.0;
        if (run.Optional("timeout") is { } text && !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out timeout))
        {
            throw new CliFailure("Error: Failed to parse parameter 'timeout': expecting a float");
        }
        var force = BoolParam(run, CliParams.Force);
        var started = DateTime.UtcNow;
        try
        {
            await run.CallAsync(force ? "VBD.unplug_force" : "VBD.unplug", vbd).ConfigureAwait(false);
        }
        catch (XenApiException e) when (e.Code == ErrorCodes.DeviceDetachRejected)
        {
            // The guest said no for now: it may still let go within the time the user allowed.
            while ((DateTime.UtcNow - started).TotalSeconds < timeout)
            {
                await Task.Delay(UnplugPoll, run.Cancellation).ConfigureAwait(false);
                if (!(bool)(await run.CallAsync("VBD.get_currently_attached", vbd).ConfigureAwait(false))!)
                {
                    return;
                }
            }
            throw;
        }
    }

    private static async ValueTask VdiCreateAsync(CliRun run)
    {
        var sr = await ByUuidAsync(run, "SR", run.Required("sr-uuid")).ConfigureAwait(false);
        var name = run.Required("name-label");
        var size = ParseBytes("virtual-size", run.Required("virtual-size"));
        var type = run.Optional("type") is { } t
            ? t switch
            {
                "system" or "user" or "suspend" or "crashdump" => t,
                _ => throw new CliFailure($"Error: Unknown vdi type: {t}"),
            }
            : "user";
        var sharable = BoolParam(run, "sharable");
        var record = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["name_label"] = name,
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = size,
            ["type"] = type,
            ["sharable"] = sharable,
            ["read_only"] = false,
            ["xenstore_data"] = new Dictionary<string, object?>(),
            ["other_config"] = new Dictionary<string, object?>(),
            ["sm_config"] = Map(run, "sm-config"),
            ["tags"] = Map(run, "tags").Keys.Cast<object?>().ToList(),
        };
        var vdi = (string)(await run.CallAsync("VDI.create", record).ConfigureAwait(false))!;
        await run.PrintAsync(await UuidOfAsync(run, "VDI", vdi).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private static async ValueTask VdiResizeAsync(CliRun run)
    {
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var size = ParseBytes("disk-size", run.Required("disk-size"));
        // Real xe resizes online only for exactly "true" (which is what --online means).
        var online = run.Optional("online") == "true" || run.Args.HasFlag("online");
        await run.CallAsync(online ? "VDI.resize_online" : "VDI.resize", vdi, size).ConfigureAwait(false);
    }

    private static async ValueTask VdiCopyAsync(CliRun run)
    {
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var baseVdi = run.Optional("base-vdi-uuid") is { } b ? await ByUuidAsync(run, "VDI", b).ConfigureAwait(false) : XType.NullRef;
        var srUuid = run.Optional("sr-uuid");
        var intoUuid = run.Optional("into-vdi-uuid");
        if ((srUuid is null) == (intoUuid is null))
        {
            throw new CliFailure("Error: Please specify one but not both of: a destination sr-uuid (I will create a fresh VDI); or a destination into-vdi-uuid (I will copy the blocks into this VDI)");
        }
        var sr = srUuid is null ? XType.NullRef : await ByUuidAsync(run, "SR", srUuid).ConfigureAwait(false);
        var into = intoUuid is null ? XType.NullRef : await ByUuidAsync(run, "VDI", intoUuid).ConfigureAwait(false);
        var copy = (string)(await run.CallAsync("VDI.copy", vdi, sr, baseVdi, into).ConfigureAwait(false))!;
        await run.PrintAsync(await UuidOfAsync(run, "VDI", copy).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private static async ValueTask VdiSnapshotAsync(CliRun run)
    {
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var snapshot = (string)(await run.CallAsync("VDI.snapshot", vdi, Map(run, "driver-params")).ConfigureAwait(false))!;
        await run.PrintAsync(await UuidOfAsync(run, "VDI", snapshot).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private static async ValueTask VdiCloneAsync(CliRun run)
    {
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var clone = (string)(await run.CallAsync("VDI.clone", vdi, Map(run, "driver-params")).ConfigureAwait(false))!;
        if (run.Optional("new-name-label") is { } label)
        {
            await run.CallAsync("VDI.set_name_label", clone, label).ConfigureAwait(false);
        }
        if (run.Optional("new-name-description") is { } description)
        {
            await run.CallAsync("VDI.set_name_description", clone, description).ConfigureAwait(false);
        }
        await run.PrintAsync(await UuidOfAsync(run, "VDI", clone).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private static async ValueTask VdiImportAsync(CliRun run)
    {
        var fileName = run.Required("filename");
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var format = run.Optional("format") is { } f ? "&format=" + f : "";
        // As real hosts: a path on the server the client is talking to, the refs unescaped.
        await StorageTransfers.TrackAsync(run, "VDI import", upload: true, fileName,
            task => $"{ImportRawVdiPath}?session_id={run.Api.Session}&task_id={task}&vdi={vdi}{format}").ConfigureAwait(false);
    }

    private static async ValueTask VdiExportAsync(CliRun run)
    {
        var fileName = run.Required("filename");
        var vdi = await ByUuidAsync(run, "VDI", run.Required(CliParams.Uuid)).ConfigureAwait(false);
        var format = run.Optional("format") is { } f ? "&format=" + f : "";
        var baseVdi = run.Optional("base") is { } b ? "&base=" + b : "";
        await StorageTransfers.TrackAsync(run, "VDI export", upload: false, fileName,
            task => $"{ExportRawVdiPath}?session_id={run.Api.Session}&task_id={task}&vdi={vdi}{format}{baseVdi}").ConfigureAwait(false);
    }

    private static async ValueTask SrCreateAsync(CliRun run)
    {
        var name = run.Required("name-label");
        var description = run.Optional("name-description") ?? "";
        var shared = BoolParam(run, "shared");
        var host = await HostAsync(run, defaultToMaster: shared).ConfigureAwait(false);
        long physicalSize = 0;
        if (run.Optional("physical-size") is { } size)
        {
            try
            {
                physicalSize = ParseBytes("physical-size", size);
            }
            catch (CliFailure)
            {
                // Real xe takes a size it cannot read as no size at all.
            }
        }
        var type = run.Required("type");
        var contentType = run.Optional("content-type") ?? "";
        var sr = (string)(await run.CallAsync("SR.create", host, Map(run, "device-config"), physicalSize, name, description, type, contentType, shared, Map(run, "sm-config")).ConfigureAwait(false))!;
        await run.PrintAsync(await UuidOfAsync(run, "SR", sr).ConfigureAwait(false)).ConfigureAwait(false);
    }

    /// <summary>The host named by <c>host-uuid=</c>, else the master where that is unambiguous (one host, or a shared SR).</summary>
    private static async ValueTask<string> HostAsync(CliRun run, bool defaultToMaster)
    {
        if (run.Optional("host-uuid") is { } uuid)
        {
            return await ByUuidAsync(run, "host", uuid).ConfigureAwait(false);
        }
        var hosts = (IReadOnlyList<object?>)(await run.CallAsync("host.get_all").ConfigureAwait(false))!;
        if (hosts.Count != 1 && !defaultToMaster)
        {
            throw new CliFailure("Error: Required parameter not found: host-uuid");
        }
        var pools = (IReadOnlyList<object?>)(await run.CallAsync("pool.get_all").ConfigureAwait(false))!;
        return (string)(await run.CallAsync("pool.get_master", pools[0]).ConfigureAwait(false))!;
    }

    private static async ValueTask SrIntroduceAsync(CliRun run)
    {
        var uuid = run.Required(CliParams.Uuid);
        await run.CallAsync("SR.introduce", uuid, run.Required("name-label"), run.Optional("name-description") ?? "", run.Required("type"),
            run.Optional("content-type") ?? "", BoolParam(run, "shared"), Map(run, "sm-config")).ConfigureAwait(false);
        await run.PrintAsync(uuid).ConfigureAwait(false);
    }
}
