using System.Xml;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;

namespace Xapi.Server.Api;

/// <summary>
/// VM.provision (xapi_vm.ml, xapi_templates.ml): a template becomes a VM ("install time"), and the
/// disks its <c>other_config:disks</c> describes are created on the SRs named there, each with a VBD.
/// </summary>
public sealed partial class VMApi
{
    // other_config keys a template describes its installation with (xapi_templates.ml).
    private const string DisksKey = "disks";
    private const string PostInstallKey = "postinstall";

    // The only directory a post-install script may come from (xapi_globs.ml).
    private const string PostInstallScriptsDirectory = "/opt/xensource/packages/post-install-scripts";

    private const string ProvisionedDiskDescription = "Created by template provisioner";

    // What real hosts answer for a disks value of the wrong shape: their parser's exception, uncaught.
    private const string ProvisionParseFailure = "Xapi_templates.Parse_failure";

    // A provision spec is a handful of elements; anything near this is not one.
    private const int MaxProvisionSpecChars = 1 << 20;

    // The VDI types a provision spec may ask for (string2vdi_type); any other means system.
    private static readonly VdiType[] ProvisionableTypes = [VdiType.System, VdiType.User, VdiType.Ephemeral, VdiType.Suspend, VdiType.Crashdump];

    private sealed record ProvisionDisk(string Device, long Size, string Sr, bool Bootable, VdiType Type);

    [RunsAs<VmOperations>(VmOperations.Provision)]
    public async ValueTask Provision(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        // Parsed before anything changes, as real hosts do to pick the host that sees the SRs.
        var disksSpec = record.OtherConfig.TryGetValue(DisksKey, out var spec) && spec is string text ? ParseProvisionSpec(text) : [];
        var script = record.OtherConfig.TryGetValue(PostInstallKey, out var scriptValue) ? scriptValue as string : null;
        var now = time.GetUtcNow().UtcDateTime;
        context.Write(tx =>
        {
            tx.Update(vm, v => v.IsATemplate = false);
            var metrics = tx.Get(vm).Metrics;
            if (!metrics.IsNull && tx.Exists(metrics))
            {
                tx.Update(metrics, m => m.InstallTime = now);
            }
            VmAllowedOperations.Refresh(tx, vm);
        });
        if (disksSpec.Count == 0 && script is null)
        {
            return;
        }
        context.ReportProgress(0.1);
        var made = new List<(VBDRef Vbd, VDIRef Vdi)>();
        try
        {
            foreach (var disk in disksSpec)
            {
                made.Add(await CreateProvisionedDiskAsync(context, vm, record.Uuid, disk));
            }
            if (script is not null)
            {
                AssertPostInstallScriptAllowed(script);
                // No post-install scripts ship with this daemon: a whitelisted name names nothing here.
                throw XenApiErrors.InternalError($"post-install script {script} is not available on this host");
            }
        }
        catch
        {
            context.Write(tx =>
            {
                foreach (var (vbd, _) in made)
                {
                    if (tx.TryGet(vbd, out var created))
                    {
                        DeleteIfExists(tx, created.Metrics);
                        tx.Delete(vbd);
                    }
                }
            });
            await DiscardDisksAsync(made.Select(m => m.Vdi));
            throw;
        }
        context.Write(tx =>
        {
            tx.Update(vm, v => v.OtherConfig = v.OtherConfig.Without(DisksKey).Without(PostInstallKey));
            RefreshAllowedOperations(tx, vm);
        });
        await context.SettledAsync();
    }

    /// <summary>
    /// create_disk: the SR by uuid (UUID_INVALID ["sr"; value] otherwise), a VDI there, and a VBD to the
    /// VM that owns it; the VDI is then named after the VBD's device.
    /// </summary>
    private async ValueTask<(VBDRef, VDIRef)> CreateProvisionedDiskAsync(CallContext context, VMRef vm, string vmUuid, ProvisionDisk disk)
    {
        if (!context.Snapshot.TryGetByUuid(SRRef.Class, disk.Sr, out var srRow))
        {
            throw XenApiErrors.UuidInvalid(SRRef.Class.Name.ToLowerInvariant(), disk.Sr);
        }
        var sr = new SRRef(srRow.Ref);
        var vdi = await storage.CreateVdiAsync(sr,
            new VdiSpec(Guid.NewGuid().ToString("D"), disk.Size, "", disk.Type, false, new Dictionary<string, string> { [VmHintKey] = vmUuid }),
            v =>
            {
                v.NameDescription = ProvisionedDiskDescription;
                v.Sharable = false;
                v.SmConfig = v.SmConfig.With(VmHintKey, vmUuid);
            },
            context.Cancellation);
        try
        {
            var vbd = context.Write(tx =>
            {
                var owner = tx.Get(vm);
                var used = VbdDevices.Used(tx, vm);
                var interpretations = DeviceNumber.Interpretations(disk.Device).ToList();
                if (interpretations.Count == 0)
                {
                    throw XenApiErrors.InvalidDevice(disk.Device);
                }
                if (interpretations.Any(used.Contains))
                {
                    throw XenApiErrors.DeviceAlreadyExists(disk.Device);
                }
                var metrics = tx.CreateVBDMetrics(m => m.Uuid = Guid.NewGuid().ToString("D"));
                var created = tx.CreateVBD(b =>
                {
                    b.Uuid = Guid.NewGuid().ToString("D");
                    b.VM = vm;
                    b.VDI = vdi;
                    b.Userdevice = disk.Device;
                    b.Device = "";
                    b.Bootable = disk.Bootable;
                    b.Mode = VbdMode.RW;
                    b.Type = VbdType.Disk;
                    b.Unpluggable = disk.Type != VdiType.System;
                    b.Empty = false;
                    b.CurrentlyAttached = false;
                    b.OtherConfig = ValueMap.Empty.With(OwnerKey, "");
                    b.QosAlgorithmType = "";
                    b.QosAlgorithmParams = ValueMap.Empty;
                    b.Metrics = metrics;
                });
                tx.Update(vdi, v => v.NameLabel = disk.Device);
                RefreshAllowedOperations(tx, owner.Ref);
                return created;
            });
            return (vbd, vdi);
        }
        catch
        {
            await DiscardDisksAsync([vdi]);
            throw;
        }
    }

    /// <summary>
    /// disks_of_xml: a <c>provision</c> root without attributes holding only <c>disk</c> elements, each
    /// with device, size, sr and bootable; type is optional and anything unknown means system.
    /// </summary>
    private static List<ProvisionDisk> ParseProvisionSpec(string text)
    {
        if (text.Length > MaxProvisionSpecChars)
        {
            throw XenApiErrors.InternalError(ProvisionParseFailure);
        }
        var settings = new XmlReaderSettings
        {
            DtdProcessing = DtdProcessing.Prohibit,
            XmlResolver = null,
            IgnoreComments = true,
            IgnoreProcessingInstructions = true,
            IgnoreWhitespace = true,
        };
        var disks = new List<ProvisionDisk>();
        try
        {
            using var reader = XmlReader.Create(new StringReader(text), settings);
            reader.MoveToContent();
            if (reader.NodeType != XmlNodeType.Element || reader.Name != "provision" || reader.HasAttributes)
            {
                throw XenApiErrors.InternalError(ProvisionParseFailure);
            }
            if (reader.IsEmptyElement)
            {
                return disks;
            }
            reader.Read();
            while (reader.NodeType != XmlNodeType.EndElement)
            {
                if (reader.NodeType != XmlNodeType.Element || reader.Name != "disk")
                {
                    throw XenApiErrors.InternalError(ProvisionParseFailure);
                }
                disks.Add(ParseProvisionDisk(reader));
                if (!reader.IsEmptyElement)
                {
                    reader.Read();
                    if (reader.NodeType != XmlNodeType.EndElement)
                    {
                        // A disk element holds nothing.
                        throw XenApiErrors.InternalError(ProvisionParseFailure);
                    }
                }
                reader.Read();
            }
        }
        catch (XmlException)
        {
            // Real hosts fail in their XML parser with its own exception; the same INTERNAL_ERROR code here.
            throw XenApiErrors.InternalError(ProvisionParseFailure);
        }
        return disks;
    }

    private static ProvisionDisk ParseProvisionDisk(XmlReader reader)
    {
        var device = reader.GetAttribute("device");
        var size = reader.GetAttribute("size");
        var sr = reader.GetAttribute("sr");
        var bootable = reader.GetAttribute("bootable");
        if (device is null || size is null || sr is null || bootable is null || !OcamlInt.TryParse(size, out var bytes))
        {
            throw XenApiErrors.InternalError(ProvisionParseFailure);
        }
        var type = reader.GetAttribute("type") is { } named
            && ProvisionableTypes.FirstOrDefault(t => t.ToWire() == named) is var parsed && parsed.ToWire() == named
            ? parsed
            : VdiType.System;
        return new ProvisionDisk(device, bytes, sr, bootable == "true", type);
    }

    /// <summary>A post-install script must sit directly in the scripts directory, named with a-z, '-' and '/' only (xapi_templates_install.ml).</summary>
    private static void AssertPostInstallScriptAllowed(string script)
    {
        var slash = script.LastIndexOf('/');
        var directory = slash > 0 ? script[..slash] : slash == 0 ? "/" : ".";
        if (directory != PostInstallScriptsDirectory || !script.All(c => c is >= 'a' and <= 'z' or '-' or '/'))
        {
            throw XenApiErrors.PermissionDenied($"illegal provision script {script}");
        }
    }
}
