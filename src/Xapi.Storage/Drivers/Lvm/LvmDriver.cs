using System.Security;
using System.Text;
using Microsoft.Extensions.Logging;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Drivers.Lvm;

/// <summary>
/// The local LVM SR: one block device is the PV of VG <c>VG_XenStorage-&lt;sr-uuid&gt;</c>, each
/// VDI a thick raw LV <c>LV-&lt;vdi-uuid&gt;</c> (SM's LVHD layout with <c>vdi_type=aio</c>).
/// Snapshots are LVM copy-on-write snapshots, made read-only and with room for every chunk
/// of the origin, so they never overflow; clones are full copies, so no VDI ever depends on a
/// clone. What old-style LVM snapshots cannot do is refused:
/// <list type="bullet">
/// <item>a snapshot of a snapshot (VdiSnapshot 82; clone it instead);</item>
/// <item>deleting a VDI that still has snapshots (VdiInUse 24): LVM would remove them with it;</item>
/// <item>resizing a snapshot or a VDI that has snapshots (VdiResize 110).</item>
/// </list>
/// Deleting a snapshot just returns its space to the VG. LVM runs as the <c>lvm</c> binary
/// through <see cref="ILvmRunner"/>; the driver never touches the pool database.
/// </summary>
public sealed class LvmDriver : SrDriver
{
    /// <summary>device_config key: the block device that becomes the SR's PV.</summary>
    public const string DeviceKey = "device";

    /// <summary>The format a backend reads an LV in.</summary>
    public const string RawFormat = "raw";

    /// <summary>sm_config keys the driver owns: SM's VDI type (raw LVs are "aio"), and the origin of a snapshot.</summary>
    public const string VdiTypeKey = "vdi_type";
    public const string RawVdiType = "aio";
    public const string SnapshotOfKey = "lvm-snapshot-of";

    /// <summary>Old-style LVM snapshots track changes in chunks of this size (LVM's default).</summary>
    private const long SnapshotChunk = 4096;

    /// <summary>One copy buffer for full-copy clones.</summary>
    private const int CopyBuffer = 1 << 20;

    private readonly ILvmRunner _lvm;
    private readonly Func<string?, string> _checkDevice;
    private readonly Func<string, bool> _isBusy;

    public LvmDriver()
        : this(new LvmProcessRunner(), device => BlockDevice.CheckClientDevice(device, DeviceKey), BlockDevice.IsBusy)
    {
    }

    /// <summary>For tests: canned LVM answers and a device check that needs no real device.</summary>
    internal LvmDriver(ILvmRunner lvm, Func<string?, string> checkDevice, Func<string, bool> isBusy)
    {
        _lvm = lvm;
        _checkDevice = checkDevice;
        _isBusy = isBusy;
    }

    public override SmDescription Description { get; } = new(
        "lvm", "Local VHD on LVM", "SR plugin which represents disks as raw logical volumes within a locally-attached volume group", "xapi-dotnet", "1.0",
        [
            new(SmFeatures.SrProbe), new(SmFeatures.SrUpdate),
            new(SmFeatures.VdiActivate), new(SmFeatures.VdiAttach), new(SmFeatures.VdiClone), new(SmFeatures.VdiCreate),
            new(SmFeatures.VdiDeactivate), new(SmFeatures.VdiDelete), new(SmFeatures.VdiDetach), new(SmFeatures.VdiResize),
            new(SmFeatures.VdiSnapshot), new(SmFeatures.VdiUpdate),
        ],
        [new(DeviceKey, "local device path (required) (e.g. /dev/sda3)")]);

    public override async ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken)
    {
        var device = _checkDevice(sr.Config(DeviceKey));
        var vg = LvmCommands.VgName(sr.Uuid);
        if (await FindVgAsync(vg, cancellationToken).ConfigureAwait(false) is not null)
        {
            throw new SmException(SmErrors.SrExists, "The SR already exists", vg);
        }
        foreach (var pv in await PvsAsync(device, cancellationToken).ConfigureAwait(false))
        {
            throw pv.VgName == vg
                ? new SmException(SmErrors.SrExists, "The SR already exists", $"{device} is a PV of {vg}")
                : new SmException(SmErrors.SrInUse, "The SR device is currently in use", $"Device {device} in use, please check your existing SRs for an instance of this device (it is an LVM PV{(pv.VgName == "" ? "" : " of VG " + pv.VgName)})");
        }
        if (_isBusy(device))
        {
            throw new SmException(SmErrors.SrInUse, "The SR device is currently in use", $"Device {device} in use, please check your existing SRs for an instance of this device");
        }
        await RunAsync(LvmCommands.PvCreate(device), SmErrors.Eio, "Failed to create the physical volume", cancellationToken).ConfigureAwait(false);
        var created = await _lvm.RunAsync(LvmCommands.VgCreate(vg, device), cancellationToken).ConfigureAwait(false);
        if (created.ExitCode != 0)
        {
            await _lvm.RunAsync(LvmCommands.PvRemove(device), cancellationToken).ConfigureAwait(false);
            throw new SmException(SmErrors.Eio, "Failed to create the volume group", created.Error);
        }
        // As SM does: the new VG is left inactive; attaching the SR activates it.
        await RunAsync(LvmCommands.VgChange(vg, active: false), SmErrors.Eio, "Failed to deactivate the volume group", cancellationToken).ConfigureAwait(false);
        sr.Logger.LogInformation("Created volume group {Vg} on {Device}", vg, device);
        return null;
    }

    public override async ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var device = _checkDevice(sr.Config(DeviceKey));
        var vg = LvmCommands.VgName(sr.Uuid);
        if (await FindVgAsync(vg, cancellationToken).ConfigureAwait(false) is null)
        {
            return;
        }
        var lvs = await LvsAsync(vg, cancellationToken).ConfigureAwait(false);
        if (lvs.Count > 0)
        {
            throw new SmException(SmErrors.SrNotEmpty, "The SR is not empty", string.Join(", ", lvs.Select(l => l.Name)));
        }
        await RunAsync(LvmCommands.VgRemove(vg), SmErrors.Eio, "Failed to remove the volume group", cancellationToken).ConfigureAwait(false);
        await RunAsync(LvmCommands.PvRemove(device), SmErrors.Eio, "Failed to remove the physical volume", cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask AttachAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var vg = await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false);
        await RunAsync(LvmCommands.VgChange(vg.Name, active: true), SmErrors.SrUnavailable, "The SR is not available", cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask DetachAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var vg = LvmCommands.VgName(sr.Uuid);
        if (await FindVgAsync(vg, cancellationToken).ConfigureAwait(false) is null)
        {
            return;
        }
        var result = await _lvm.RunAsync(LvmCommands.VgChange(vg, active: false), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw result.Error.Contains("in use", StringComparison.OrdinalIgnoreCase)
                ? new SmException(SmErrors.SrInUse, "The SR device is currently in use", result.Error)
                : new SmException(SmErrors.Eio, "Failed to deactivate the volume group", result.Error);
        }
    }

    /// <summary>SM's probe answer: one <c>&lt;SR&gt;</c> per XenStorage VG the device is a PV of.</summary>
    public override async ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken)
    {
        var device = _checkDevice(probe.DeviceConfig.GetValueOrDefault(DeviceKey));
        var xml = new StringBuilder("<?xml version=\"1.0\" ?>\n<SRlist>\n");
        foreach (var pv in await PvsAsync(device, cancellationToken).ConfigureAwait(false))
        {
            if (!pv.VgName.StartsWith(LvmCommands.VgPrefix, StringComparison.Ordinal) || !SrDirectory.IsUuid(pv.VgName[LvmCommands.VgPrefix.Length..]))
            {
                continue;
            }
            xml.Append("\t<SR>\n\t\t<UUID>").Append(pv.VgName[LvmCommands.VgPrefix.Length..]).Append("</UUID>\n")
                .Append("\t\t<Devlist>").Append(SecurityElement.Escape(device)).Append("</Devlist>\n")
                .Append("\t\t<size>").Append(pv.VgSize.ToString(System.Globalization.CultureInfo.InvariantCulture)).Append("</size>\n\t</SR>\n");
        }
        xml.Append("</SRlist>\n");
        return xml.ToString();
    }

    public override async ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var vg = await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false);
        var lvs = await LvsAsync(vg.Name, cancellationToken).ConfigureAwait(false);
        var vdis = new List<VdiInfo>();
        foreach (var lv in lvs)
        {
            if (LvmCommands.VdiUuidOf(lv.Name) is null)
            {
                sr.Logger.LogWarning("Skipping logical volume {Lv} of {Vg}: not a VDI", lv.Name, vg.Name);
                continue;
            }
            vdis.Add(InfoOf(lv, lvs));
        }
        return new SrScan(vdis, StatOf(vg));
    }

    public override async ValueTask<SrStat> StatAsync(SrContext sr, CancellationToken cancellationToken) =>
        StatOf(await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false));

    private static SrStat StatOf(VgReport vg) => new(vg.Size, vg.Size - vg.Free);

    /// <summary>A size rounded up to whole extents (LVM's allocation unit), at least one.</summary>
    public static long ExtentRounded(long size, long extentSize) =>
        Math.Max(extentSize, (size + extentSize - 1) / extentSize * extentSize);

    /// <summary>
    /// The copy-on-write store that holds every chunk of an origin of <paramref name="originSize"/>
    /// bytes: the chunks, one exception-table chunk per 256 of them (16-byte entries), the
    /// header. LVM trims a larger request down to this maximum on its own.
    /// </summary>
    public static long SnapshotCowSize(long originSize, long extentSize)
    {
        var chunks = (originSize + SnapshotChunk - 1) / SnapshotChunk;
        var metadataChunks = (chunks + SnapshotChunk / 16 - 1) / (SnapshotChunk / 16) + 2;
        return ExtentRounded((chunks + metadataChunks) * SnapshotChunk, extentSize);
    }

    private static long CheckedSize(long requested)
    {
        if (requested < 0)
        {
            throw new SmException(SmErrors.VdiSize, "VDI Invalid size", $"VDI size must not be negative: {requested}");
        }
        return requested;
    }

    public override async ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken)
    {
        var lv = LvmCommands.LvName(spec.Uuid);
        var vg = await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false);
        var size = ExtentRounded(CheckedSize(spec.VirtualSize), vg.ExtentSize);
        var lvs = await LvsAsync(vg.Name, cancellationToken).ConfigureAwait(false);
        if (lvs.Any(l => l.Name == lv))
        {
            throw new SmException(SmErrors.VdiExists, "The VDI already exists", spec.Uuid);
        }
        await CreateLvAsync(vg, LvmCommands.LvCreate(vg.Name, lv, size), size, cancellationToken).ConfigureAwait(false);
        return (await InfoAsync(vg.Name, spec.Uuid, cancellationToken).ConfigureAwait(false)) with { Type = spec.Type };
    }

    public override async ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken)
    {
        var name = LvmCommands.LvName(vdi.Uuid);
        var vg = LvmCommands.VgName(sr.Uuid);
        var lvs = await LvsAsync(vg, cancellationToken).ConfigureAwait(false);
        if (!lvs.Any(l => l.Name == name))
        {
            return;
        }
        var snapshots = lvs.Where(l => l.IsSnapshot && l.Origin == name).Select(l => l.Name).ToList();
        if (snapshots.Count > 0)
        {
            // lvremove would take the snapshots with it: they must go first.
            throw new SmException(SmErrors.VdiInUse, "The VDI is in use",
                $"{name} is the origin of LVM snapshots {string.Join(", ", snapshots)}; LVM cannot keep a snapshot without its origin, delete the snapshots first");
        }
        var result = await _lvm.RunAsync(LvmCommands.LvRemove(vg, name), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw result.Error.Contains("in use", StringComparison.OrdinalIgnoreCase)
                ? new SmException(SmErrors.VdiInUse, "The VDI is in use", result.Error)
                : new SmException(SmErrors.VdiRemove, "Failed to remove VDI", result.Error);
        }
    }

    public override async ValueTask<VdiInfo> ResizeVdiAsync(SrContext sr, VdiInfo vdi, long newSize, CancellationToken cancellationToken)
    {
        var name = LvmCommands.LvName(vdi.Uuid);
        var vg = await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false);
        var lvs = await LvsAsync(vg.Name, cancellationToken).ConfigureAwait(false);
        var lv = lvs.FirstOrDefault(l => l.Name == name) ?? throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        if (lv.IsSnapshot)
        {
            throw new SmException(SmErrors.VdiResize, "The VDI resize failed", $"{name} is an LVM snapshot: LVM cannot change the size it presents");
        }
        if (lvs.Any(l => l.IsSnapshot && l.Origin == name))
        {
            throw new SmException(SmErrors.VdiResize, "The VDI resize failed", $"{name} has LVM snapshots: LVM cannot resize an active snapshot origin, delete the snapshots first");
        }
        var size = ExtentRounded(CheckedSize(newSize), vg.ExtentSize);
        if (size < lv.Size)
        {
            throw new SmException(SmErrors.VdiSize, "VDI Invalid size", "shrinking not allowed");
        }
        if (size == lv.Size)
        {
            return InfoOf(lv, lvs);
        }
        await CreateLvAsync(vg, LvmCommands.LvExtend(vg.Name, name, size), size - lv.Size, cancellationToken).ConfigureAwait(false);
        return await InfoAsync(vg.Name, vdi.Uuid, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The VDI's LV (which must exist) and the name of a new one (which must not).</summary>
    private async Task<(string Name, string NewName, VgReport Vg, IReadOnlyList<LvReport> Lvs, LvReport Lv)> SourceAndNewNameAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken)
    {
        var name = LvmCommands.LvName(vdi.Uuid);
        var newName = LvmCommands.LvName(newUuid);
        var vg = await RequireVgAsync(sr, cancellationToken).ConfigureAwait(false);
        var lvs = await LvsAsync(vg.Name, cancellationToken).ConfigureAwait(false);
        var lv = lvs.FirstOrDefault(l => l.Name == name) ?? throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        if (lvs.Any(l => l.Name == newName))
        {
            throw new SmException(SmErrors.VdiExists, "The VDI already exists", newUuid);
        }
        return (name, newName, vg, lvs, lv);
    }

    /// <summary>A read-only LVM snapshot: instant and consistent even while the VDI is written.</summary>
    public override async ValueTask<ChainChange> SnapshotVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken)
    {
        var (name, newName, vg, lvs, lv) = await SourceAndNewNameAsync(sr, vdi, newUuid, cancellationToken).ConfigureAwait(false);
        if (lv.IsSnapshot)
        {
            throw new SmException(SmErrors.VdiSnapshot, "Failed to snapshot VDI", $"{name} is itself an LVM snapshot and LVM cannot snapshot a snapshot; clone it instead (a full copy)");
        }
        var cow = SnapshotCowSize(lv.Size, vg.ExtentSize);
        await CreateLvAsync(vg, LvmCommands.LvSnapshot(vg.Name, name, newName, cow, writable: false), cow, cancellationToken).ConfigureAwait(false);
        var created = await InfoAsync(vg.Name, newUuid, cancellationToken).ConfigureAwait(false);
        var source = await InfoAsync(vg.Name, vdi.Uuid, cancellationToken).ConfigureAwait(false);
        return new ChainChange(created, source, null);
    }

    /// <summary>
    /// A full copy into a new plain LV. A writable LVM snapshot would reserve the same space,
    /// slow every write to the source and forbid deleting the source while the clone lives;
    /// a copy depends on nothing. The source must not change while it is copied (clone a
    /// running VDI's snapshot, as VM.clone of a snapshot does).
    /// </summary>
    public override async ValueTask<ChainChange> CloneVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken)
    {
        var (name, newName, vg, lvs, lv) = await SourceAndNewNameAsync(sr, vdi, newUuid, cancellationToken).ConfigureAwait(false);
        var size = ExtentRounded(InfoOf(lv, lvs).VirtualSize, vg.ExtentSize);
        await CreateLvAsync(vg, LvmCommands.LvCreate(vg.Name, newName, size), size, cancellationToken).ConfigureAwait(false);
        try
        {
            await ActivateAsync(vg.Name, lv, cancellationToken).ConfigureAwait(false);
            await CopyAsync(LvmCommands.DevicePath(sr.Uuid, vdi.Uuid), LvmCommands.DevicePath(sr.Uuid, newUuid), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await _lvm.RunAsync(LvmCommands.LvRemove(vg.Name, newName), CancellationToken.None).ConfigureAwait(false);
            throw;
        }
        var created = await InfoAsync(vg.Name, newUuid, cancellationToken).ConfigureAwait(false);
        var source = await InfoAsync(vg.Name, vdi.Uuid, cancellationToken).ConfigureAwait(false);
        return new ChainChange(created, source, null);
    }

    private static async Task CopyAsync(string from, string to, CancellationToken cancellationToken)
    {
        await using var source = RawFileImage.Open(from, writable: false);
        await using var target = RawFileImage.Open(to, writable: true);
        var buffer = new byte[CopyBuffer];
        var length = Math.Min(source.Size, target.Size);
        for (var offset = 0L; offset < length; offset += buffer.Length)
        {
            var chunk = buffer.AsMemory(0, (int)Math.Min(buffer.Length, length - offset));
            await source.ReadAsync(offset, chunk, cancellationToken).ConfigureAwait(false);
            await target.WriteAsync(offset, chunk, cancellationToken).ConfigureAwait(false);
        }
        await target.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        var lv = await RequireLvAsync(sr, vdi, writable, cancellationToken).ConfigureAwait(false);
        await ActivateAsync(LvmCommands.VgName(sr.Uuid), lv, cancellationToken).ConfigureAwait(false);
        return new VdiAttachment(LvmCommands.DevicePath(sr.Uuid, vdi.Uuid), RawFormat, !writable);
    }

    public override async ValueTask ActivateVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        var lv = await RequireLvAsync(sr, vdi, writable, cancellationToken).ConfigureAwait(false);
        await ActivateAsync(LvmCommands.VgName(sr.Uuid), lv, cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        var lv = await RequireLvAsync(sr, vdi, writable, cancellationToken).ConfigureAwait(false);
        await ActivateAsync(LvmCommands.VgName(sr.Uuid), lv, cancellationToken).ConfigureAwait(false);
        return RawFileImage.Open(LvmCommands.DevicePath(sr.Uuid, vdi.Uuid), writable);
    }

    private async Task<LvReport> RequireLvAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        var name = LvmCommands.LvName(vdi.Uuid);
        var lvs = await LvsAsync(LvmCommands.VgName(sr.Uuid), cancellationToken).ConfigureAwait(false);
        var lv = lvs.FirstOrDefault(l => l.Name == name) ?? throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        if (writable && lv.IsReadOnly)
        {
            throw new SmException(SmErrors.VdiUnavailable, "The VDI is not available", $"{name} is a read-only snapshot");
        }
        if (lv.IsInvalidSnapshot)
        {
            throw new SmException(SmErrors.VdiUnavailable, "The VDI is not available", $"{name} is an invalidated LVM snapshot");
        }
        return lv;
    }

    private async Task ActivateAsync(string vg, LvReport lv, CancellationToken cancellationToken)
    {
        if (!lv.IsActive)
        {
            await RunAsync(LvmCommands.LvChange(vg, lv.Name, active: true), SmErrors.VdiUnavailable, "The VDI is not available", cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Runs an lvcreate/lvextend that needs <paramref name="needed"/> bytes of the VG: refused
    /// before running when the VG lacks them, and LVM's own "insufficient free space" (a race
    /// with another allocation) is the same SR-full answer.
    /// </summary>
    private async Task CreateLvAsync(VgReport vg, IReadOnlyList<string> command, long needed, CancellationToken cancellationToken)
    {
        if (needed > vg.Free)
        {
            throw new SrFullException(needed, vg.Free);
        }
        var result = await _lvm.RunAsync(command, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode == 0)
        {
            return;
        }
        if (result.Error.Contains("insufficient free space", StringComparison.OrdinalIgnoreCase))
        {
            var now = await FindVgAsync(vg.Name, cancellationToken).ConfigureAwait(false);
            throw new SrFullException(needed, now?.Free ?? 0);
        }
        throw new SmException(command[0] == "lvextend" ? SmErrors.VdiResize : SmErrors.VdiCreate, $"{command[0]} failed", result.Error);
    }

    private static VdiInfo InfoOf(LvReport lv, IReadOnlyList<LvReport> all)
    {
        var uuid = LvmCommands.VdiUuidOf(lv.Name)!;
        var smConfig = new Dictionary<string, string> { [VdiTypeKey] = RawVdiType };
        var virtualSize = lv.Size;
        if (lv.IsSnapshot)
        {
            var origin = all.FirstOrDefault(l => l.Name == lv.Origin);
            virtualSize = origin?.Size ?? lv.Size;
            if (LvmCommands.VdiUuidOf(lv.Origin) is { } originUuid)
            {
                smConfig[SnapshotOfKey] = originUuid;
            }
        }
        return new VdiInfo
        {
            Uuid = uuid,
            Location = uuid,
            VirtualSize = virtualSize,
            PhysicalUtilisation = lv.Size,
            ReadOnly = lv.IsReadOnly,
            SmConfig = smConfig,
        };
    }

    private async Task<VdiInfo> InfoAsync(string vg, string uuid, CancellationToken cancellationToken)
    {
        var lvs = await LvsAsync(vg, cancellationToken).ConfigureAwait(false);
        var name = LvmCommands.LvName(uuid);
        var lv = lvs.FirstOrDefault(l => l.Name == name) ?? throw new SmException(SmErrors.VdiMissing, "The VDI is not available", uuid);
        return InfoOf(lv, lvs);
    }

    private async Task<VgReport> RequireVgAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var vg = LvmCommands.VgName(sr.Uuid);
        return await FindVgAsync(vg, cancellationToken).ConfigureAwait(false)
            ?? throw new SmException(SmErrors.SrUnavailable, "The SR is not available", $"volume group {vg} not found");
    }

    /// <summary>The VG, or null when LVM does not know it (vgs fails for an unknown name).</summary>
    private async Task<VgReport?> FindVgAsync(string vg, CancellationToken cancellationToken)
    {
        var result = await _lvm.RunAsync(LvmCommands.Vgs(vg), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            if (result.Error.Contains("not found", StringComparison.OrdinalIgnoreCase))
            {
                return null;
            }
            throw new SmException(SmErrors.SrUnavailable, "The SR is not available", result.Error);
        }
        return LvmReportParser.Vgs(result.Output).FirstOrDefault(v => v.Name == vg);
    }

    private async Task<IReadOnlyList<LvReport>> LvsAsync(string vg, CancellationToken cancellationToken) =>
        LvmReportParser.Lvs(await RunAsync(LvmCommands.Lvs(vg), SmErrors.SrScan, "The SR scan failed", cancellationToken).ConfigureAwait(false));

    /// <summary>The PVs on a device; none when it holds no LVM label (pvs then fails).</summary>
    private async Task<IReadOnlyList<PvReport>> PvsAsync(string device, CancellationToken cancellationToken)
    {
        var result = await _lvm.RunAsync(LvmCommands.Pvs(device), cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0 ? LvmReportParser.Pvs(result.Output) : [];
    }

    private async Task<string> RunAsync(IReadOnlyList<string> command, int code, string message, CancellationToken cancellationToken)
    {
        var result = await _lvm.RunAsync(command, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new SmException(code, message, $"{command[0]}: {result.Error}");
        }
        return result.Output;
    }
}
