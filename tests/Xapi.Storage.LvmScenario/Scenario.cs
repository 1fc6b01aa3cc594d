using System.Net;
using Xapi.Model;
using Xapi.Storage;
using Xapi.Storage.Drivers.Lvm;

/// <summary>
/// An lvm SR's whole life as a client sees it: every answer checked is one a user reads (the
/// records, the exact XenAPI error codes and their parameters, the bytes exports give back).
/// The only look behind the API is at /dev, to see that unplugging deactivates the volumes.
/// </summary>
internal sealed class Scenario(Wire wire, Report report, string device)
{
    private const long MiB = 1L << 20;

    // LVM's default extent: every size the SR reports is a whole number of them.
    private const long Extent = 4 * MiB;

    private const string LvmType = "lvm";

    private readonly byte[] _first = Image(8 * MiB, (0, 8 * MiB, 1));

    private byte[] Second => Overlay(_first, (2 * MiB, 4 * MiB, 2));

    private byte[] Third => Overlay(_first, (0, 1 * MiB, 3));

    private string _host = "";

    private static string Backend(int smCode) => $"{ErrorCodes.SrBackendFailure}_{smCode}";

    private static Dictionary<string, object?> DeviceConfig(string? value) =>
        value is null ? [] : new Dictionary<string, object?> { [LvmDriver.DeviceKey] = value };

    private static readonly Dictionary<string, object?> Empty = [];

    /// <summary>Bytes from seeded generators at the given places, zeros elsewhere.</summary>
    private static byte[] Image(long size, params (long Offset, long Length, int Seed)[] writes) => Overlay(new byte[size], writes);

    private static byte[] Overlay(byte[] under, params (long Offset, long Length, int Seed)[] writes)
    {
        var bytes = (byte[])under.Clone();
        foreach (var (offset, length, seed) in writes)
        {
            new Random(seed).NextBytes(bytes.AsSpan((int)offset, (int)length));
        }
        return bytes;
    }

    private static string Sha(byte[] bytes) => Wire.Sha256(bytes);

    /// <summary>Runs a call that must fail with <paramref name="code"/> (and whatever else <paramref name="also"/> asks of its parameters).</summary>
    private async Task ExpectErrorAsync(string name, string code, Func<Task> action, Func<XenApiException, bool>? also = null)
    {
        try
        {
            await action();
            report.Check(name, false, $"expected {code}, got success");
        }
        catch (XenApiException e)
        {
            report.Check(name, e.Code == code && (also?.Invoke(e) ?? true), string.Join(" ", e.Description));
        }
    }

    private Task<string> CreateSrAsync(Dictionary<string, object?> deviceConfig) =>
        wire.RefAsync("SR.create", _host, deviceConfig, "0", "LVM scenario", "", LvmType, "user", false, Empty);

    private Task<string> ProbeAsync(string? value) => wire.RefAsync("SR.probe", _host, DeviceConfig(value), LvmType, Empty);

    /// <summary>SR.scan, then the SR's record: the sizes as the driver last reported them.</summary>
    private async Task<IReadOnlyDictionary<string, object?>> ScannedAsync(string sr)
    {
        await wire.CallAsync("SR.scan", sr);
        return await wire.RecordAsync("SR", sr);
    }

    private static string Sizes(IReadOnlyDictionary<string, object?> sr) =>
        $"physical_size={Wire.Text(sr, "physical_size")} physical_utilisation={Wire.Text(sr, "physical_utilisation")} virtual_allocation={Wire.Text(sr, "virtual_allocation")}";

    private static long Free(IReadOnlyDictionary<string, object?> sr) => Wire.Long(sr, "physical_size") - Wire.Long(sr, "physical_utilisation");

    public async Task RunAsync()
    {
        _host = (await wire.RefsAsync("host.get_all")).Single();
        var srsBefore = (await wire.RefsAsync("SR.get_all")).Count;
        var pbdsBefore = (await wire.RefsAsync("PBD.get_all")).Count;

        // device_config is checked before LVM runs: nothing outside /dev, no traversal, block devices only.
        var invalidArg = Backend(SmErrors.InvalidArg);
        var noDevice = Backend(SmErrors.ConfigDeviceMissing);
        await ExpectErrorAsync("device-config-traversal", invalidArg, () => CreateSrAsync(DeviceConfig("/dev/../etc/passwd")));
        await ExpectErrorAsync("device-config-outside-dev", invalidArg, () => CreateSrAsync(DeviceConfig("/etc/passwd")));
        await ExpectErrorAsync("device-config-not-block", invalidArg, () => CreateSrAsync(DeviceConfig("/dev/null")));
        await ExpectErrorAsync("device-config-missing", noDevice, () => CreateSrAsync(DeviceConfig("/dev/no-such-disk")));
        await ExpectErrorAsync("device-config-absent", noDevice, () => CreateSrAsync(DeviceConfig(null)));
        await ExpectErrorAsync("probe-traversal", invalidArg, () => ProbeAsync("/dev/../proc/self/mem"));
        var srsAfter = (await wire.RefsAsync("SR.get_all")).Count;
        var pbdsAfter = (await wire.RefsAsync("PBD.get_all")).Count;
        report.Check("refused-create-leaves-no-record", srsAfter == srsBefore && pbdsAfter == pbdsBefore, $"SRs {srsBefore}->{srsAfter} PBDs {pbdsBefore}->{pbdsAfter}");

        var emptyProbe = await ProbeAsync(device);
        report.Check("probe-empty-device", !emptyProbe.Contains("<SR>", StringComparison.Ordinal), emptyProbe);

        // SR.create makes the VG and plugs the PBD.
        var sr = await CreateSrAsync(DeviceConfig(device));
        var created = await wire.RecordAsync("SR", sr);
        var srUuid = Wire.Text(created, "uuid");
        var pbd = Wire.Refs(created, "PBDs").Single();
        var pbdRecord = await wire.RecordAsync("PBD", pbd);
        var initialFree = Free(created);
        report.Check("sr-create", Wire.Text(created, "type") == LvmType && Wire.Bool(pbdRecord, "currently_attached")
            && Wire.Long(created, "physical_size") > 100 * MiB && Wire.Long(created, "physical_utilisation") == 0
            && (string?)Wire.Map(pbdRecord, "device_config").GetValueOrDefault(LvmDriver.DeviceKey) == device,
            $"uuid={srUuid} attached={Wire.Bool(pbdRecord, "currently_attached")} {Sizes(created)}");

        await ExpectErrorAsync("sr-create-on-used-device", ErrorCodes.SrDeviceInUse, () => CreateSrAsync(DeviceConfig(device)));
        report.Check("sr-create-on-used-device-leaves-no-record", (await wire.RefsAsync("SR.get_all")).Count == srsBefore + 1, "");

        var probe = await ProbeAsync(device);
        report.Check("probe", probe.Contains($"<UUID>{srUuid}</UUID>", StringComparison.Ordinal) && probe.Contains($"<Devlist>{device}</Devlist>", StringComparison.Ordinal)
            && probe.Contains($"<size>{Wire.Long(created, "physical_size")}</size>", StringComparison.Ordinal), probe);

        // A VDI: thick, rounded up to whole extents.
        var a = await wire.CreateVdiAsync(sr, 6 * MiB, "origin");
        var aRecord = await wire.RecordAsync("VDI", a);
        var aUuid = Wire.Text(aRecord, "uuid");
        var afterCreate = await ScannedAsync(sr);
        report.Check("vdi-create", Wire.Long(aRecord, "virtual_size") == 8 * MiB && Wire.Long(aRecord, "physical_utilisation") == 8 * MiB
            && (string?)Wire.Map(aRecord, "sm_config").GetValueOrDefault(LvmDriver.VdiTypeKey) == LvmDriver.RawVdiType
            && Wire.Long(afterCreate, "physical_utilisation") == 8 * MiB,
            $"virtual={Wire.Text(aRecord, "virtual_size")} physical={Wire.Text(aRecord, "physical_utilisation")} {Sizes(afterCreate)}");

        var write = await wire.ImportAsync(a, _first);
        var shaA = await wire.ExportSha256Async(a);
        report.Check("write-read", write.Succeeded && shaA == Sha(_first), $"import: {write} export sha256={shaA}");

        // A read-only LVM snapshot keeps the data as it was; the origin stays writable.
        var s = await wire.RefAsync("VDI.snapshot", a, Empty);
        var sRecord = await wire.RecordAsync("VDI", s);
        var sUuid = Wire.Text(sRecord, "uuid");
        report.Check("snapshot", Wire.Bool(sRecord, "read_only") && Wire.Bool(sRecord, "is_a_snapshot") && Wire.Text(sRecord, "snapshot_of") == a
            && Wire.Long(sRecord, "virtual_size") == 8 * MiB && Wire.Long(sRecord, "physical_utilisation") >= 8 * MiB
            && (string?)Wire.Map(sRecord, "sm_config").GetValueOrDefault(LvmDriver.SnapshotOfKey) == aUuid
            && Wire.Refs(await wire.RecordAsync("VDI", a), "snapshots").Contains(s),
            $"read_only={Wire.Bool(sRecord, "read_only")} virtual={Wire.Text(sRecord, "virtual_size")} physical={Wire.Text(sRecord, "physical_utilisation")}");

        var second = Second;
        var rewrite = await wire.ImportAsync(a, second);
        var shaAfter = await wire.ExportSha256Async(a);
        var shaSnap = await wire.ExportSha256Async(s);
        report.Check("write-after-snapshot", rewrite.Succeeded && shaAfter == Sha(second) && shaSnap == Sha(_first), $"import: {rewrite} origin={shaAfter} snapshot={shaSnap}");

        var vhdA = await wire.ExportAsync(a, "vhd");
        var vhdS = await wire.ExportAsync(s, "vhd");
        var vhdShaA = vhdA.Succeeded ? Sha(VhdReader.ToRaw(vhdA.Body)) : vhdA.ToString();
        var vhdShaS = vhdS.Succeeded ? Sha(VhdReader.ToRaw(vhdS.Body)) : vhdS.ToString();
        report.Check("export-vhd", vhdShaA == Sha(second) && vhdShaS == Sha(_first), $"origin={vhdShaA} ({vhdA.Body.Length} bytes) snapshot={vhdShaS} ({vhdS.Body.Length} bytes)");

        await ExpectErrorAsync("snapshot-of-snapshot-refused", Backend(SmErrors.VdiSnapshot), () => wire.RefAsync("VDI.snapshot", s, Empty));
        var intoSnapshot = await wire.ImportAsync(s, Third);
        report.Check("write-of-snapshot-refused", intoSnapshot.Status != HttpStatusCode.OK && intoSnapshot.TaskStatus == "failure"
            && intoSnapshot.ErrorInfo.FirstOrDefault() == ErrorCodes.VdiReadonly && await wire.ExportSha256Async(s) == Sha(_first), intoSnapshot.ToString());
        var tooLarge = await wire.ImportAsync(a, new byte[12 * MiB]);
        report.Check("import-larger-than-vdi-refused", tooLarge.Status == HttpStatusCode.BadRequest && tooLarge.ErrorInfo.FirstOrDefault() == ErrorCodes.VdiTooSmall
            && await wire.ExportSha256Async(a) == Sha(second), tooLarge.ToString());

        // A clone of the snapshot is a full, writable copy.
        var c = await wire.RefAsync("VDI.clone", s, Empty);
        var cRecord = await wire.RecordAsync("VDI", c);
        var cUuid = Wire.Text(cRecord, "uuid");
        var shaClone = await wire.ExportSha256Async(c);
        report.Check("clone-of-snapshot", !Wire.Bool(cRecord, "read_only") && !Wire.Bool(cRecord, "is_a_snapshot") && Wire.Long(cRecord, "virtual_size") == 8 * MiB
            && shaClone == Sha(_first) && await wire.ExportSha256Async(s) == Sha(_first) && await wire.ExportSha256Async(a) == Sha(second),
            $"clone={shaClone} read_only={Wire.Bool(cRecord, "read_only")}");

        var third = Third;
        var cloneWrite = await wire.ImportAsync(c, third);
        report.Check("clone-is-independent", cloneWrite.Succeeded && await wire.ExportSha256Async(s) == Sha(_first) && await wire.ExportSha256Async(c) == Sha(third),
            $"import: {cloneWrite}; snapshot unchanged after writing the clone");

        var scanned = await ScannedAsync(sr);
        var vdis = Wire.Refs(scanned, "VDIs");
        var records = new List<IReadOnlyDictionary<string, object?>>();
        foreach (var vdi in vdis)
        {
            records.Add(await wire.RecordAsync("VDI", vdi));
        }
        var used = records.Sum(r => Wire.Long(r, "physical_utilisation"));
        report.Check("scan", vdis.Order().SequenceEqual(new[] { a, s, c }.Order())
            && records.All(r => (string?)Wire.Map(r, "sm_config").GetValueOrDefault(LvmDriver.VdiTypeKey) == LvmDriver.RawVdiType)
            && Wire.Long(scanned, "physical_utilisation") == used && Wire.Long(scanned, "virtual_allocation") == 3 * 8 * MiB,
            $"{Sizes(scanned)} vdis={string.Join(",", records.Select(r => $"{Wire.Text(r, "uuid")[..8]}:{Wire.Text(r, "virtual_size")}/{Wire.Text(r, "physical_utilisation")}{(Wire.Bool(r, "read_only") ? ":ro" : "")}"))}");

        // What LVM's snapshots cannot do is refused with the driver's code, and changes nothing.
        await ExpectErrorAsync("delete-origin-with-snapshot-refused", Backend(SmErrors.VdiInUse), () => wire.CallAsync("VDI.destroy", a));
        await ExpectErrorAsync("resize-origin-with-snapshot-refused", Backend(SmErrors.VdiResize), () => wire.CallAsync("VDI.resize", a, Wire.Number(40 * MiB)));
        report.Check("refusals-change-nothing", Wire.Long(await wire.RecordAsync("VDI", a), "virtual_size") == 8 * MiB && await wire.ExportSha256Async(a) == Sha(second), "");

        await ExpectErrorAsync("sr-destroy-plugged-refused", ErrorCodes.SrHasPbd, () => wire.CallAsync("SR.destroy", sr), e => e.Parameters.SequenceEqual([sr]));

        // Unplugging deactivates every LV; SR.destroy then still refuses an SR with VDIs; plugging brings the data back.
        await wire.CallAsync("PBD.unplug", pbd);
        var unplugged = !Wire.Bool(await wire.RecordAsync("PBD", pbd), "currently_attached");
        var nodesGone = new[] { aUuid, sUuid, cUuid }.All(v => !File.Exists(LvmCommands.DevicePath(srUuid, v)));
        await ExpectErrorAsync("sr-delete-not-empty", ErrorCodes.SrNotEmpty, () => wire.CallAsync("SR.destroy", sr));
        await wire.CallAsync("PBD.plug", pbd);
        var replugged = Wire.Bool(await wire.RecordAsync("PBD", pbd), "currently_attached");
        report.Check("unplug-plug", unplugged && nodesGone && replugged && await wire.ExportSha256Async(a) == Sha(second) && await wire.ExportSha256Async(s) == Sha(_first),
            $"unplugged={unplugged} device nodes gone={nodesGone} plugged again={replugged}");

        await wire.CallAsync("VDI.resize", c, Wire.Number(10 * MiB));
        var resized = await wire.RecordAsync("VDI", c);
        var grown = await wire.ExportAsync(c);
        report.Check("resize", Wire.Long(resized, "virtual_size") == 12 * MiB && grown.Succeeded && grown.Body.Length == 12 * MiB
            && Wire.Sha256(grown.Body.AsSpan(0, (int)(8 * MiB))) == Sha(third),
            $"virtual={Wire.Text(resized, "virtual_size")} exported={grown.Body.Length} bytes");
        await ExpectErrorAsync("resize-shrink-refused", Backend(SmErrors.VdiSize), () => wire.CallAsync("VDI.resize", c, Wire.Number(4 * MiB)));

        // The VG fills: refused before lvcreate, with what was asked and what is left.
        var beforeFull = await ScannedAsync(sr);
        var free = Free(beforeFull);
        var vdiCount = Wire.Refs(beforeFull, "VDIs").Count;
        await ExpectErrorAsync("sr-full", ErrorCodes.SrFull, () => wire.CreateVdiAsync(sr, free + 1, "too large"),
            e => e.Parameters.SequenceEqual([Wire.Number(free + Extent), Wire.Number(free)]));
        var afterRefusal = await ScannedAsync(sr);
        report.Check("sr-full-changes-nothing", Wire.Refs(afterRefusal, "VDIs").Count == vdiCount && Free(afterRefusal) == free, Sizes(afterRefusal));
        var filler = await wire.CreateVdiAsync(sr, free, "filler");
        await ExpectErrorAsync("sr-full-exactly", ErrorCodes.SrFull, () => wire.CreateVdiAsync(sr, 1, "one byte"),
            e => e.Parameters.SequenceEqual([Wire.Number(Extent), "0"]));
        report.Check("sr-full-utilisation", Free(await ScannedAsync(sr)) == 0, "");
        await ExpectErrorAsync("snapshot-sr-full", ErrorCodes.SrFull, () => wire.RefAsync("VDI.snapshot", c, Empty),
            e => e.Parameters.Count == 2 && long.Parse(e.Parameters[0], System.Globalization.CultureInfo.InvariantCulture) > 12 * MiB && e.Parameters[1] == "0");

        // Deleting returns the space: the snapshot first, then its origin.
        await wire.CallAsync("VDI.destroy", s);
        var afterSnapshotDelete = await ScannedAsync(sr);
        report.Check("delete-snapshot", Free(afterSnapshotDelete) == Wire.Long(sRecord, "physical_utilisation") && await wire.ExportSha256Async(a) == Sha(second)
            && !Wire.Refs(await wire.RecordAsync("VDI", a), "snapshots").Contains(s), Sizes(afterSnapshotDelete));
        foreach (var vdi in new[] { a, c, filler })
        {
            await wire.CallAsync("VDI.destroy", vdi);
        }
        var end = await ScannedAsync(sr);
        report.Check("delete-frees-space", Wire.Long(end, "physical_utilisation") == 0 && Free(end) == initialFree && Wire.Long(end, "virtual_allocation") == 0
            && Wire.Refs(end, "VDIs").Count == 0, $"{Sizes(end)} initial-free={initialFree}");

        await wire.CallAsync("PBD.unplug", pbd);
        await wire.CallAsync("SR.destroy", sr);
        var probeAfter = await ProbeAsync(device);
        await ExpectErrorAsync("sr-delete", ErrorCodes.HandleInvalid, () => wire.RecordAsync("SR", sr));
        report.Check("sr-delete-frees-device", !probeAfter.Contains("<SR>", StringComparison.Ordinal)
            && (await wire.RefsAsync("PBD.get_all")).Count == pbdsBefore, probeAfter);

        // The device is free again: another SR can be made on it.
        var again = await CreateSrAsync(DeviceConfig(device));
        var againUuid = (string)(await wire.CallAsync("SR.get_uuid", again))!;
        var probeNew = await ProbeAsync(device);
        await wire.CallAsync("PBD.unplug", Wire.Refs(await wire.RecordAsync("SR", again), "PBDs").Single());
        await wire.CallAsync("SR.destroy", again);
        report.Check("sr-recreate", probeNew.Contains($"<UUID>{againUuid}</UUID>", StringComparison.Ordinal) && againUuid != srUuid, "");
    }
}
