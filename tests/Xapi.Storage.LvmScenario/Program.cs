using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Model;
using Xapi.Storage;
using Xapi.Storage.Drivers.Lvm;

// The lvm driver's whole VDI lifecycle against real LVM and device-mapper, on an empty block
// device given as the only argument (a QEMU guest's virtio disk). Each check prints
//   SCENARIO <name> PASS|FAIL <detail>
// and the run ends with SCENARIO-END; the exit status is the number of failed checks.
// Checks run in order and later ones use what earlier ones made, so the first failure that
// leaves nothing to work on stops the run (reported as FAIL of that check).

if (args.Length != 1)
{
    Console.Error.WriteLine("usage: Xapi.Storage.LvmScenario DEVICE");
    return 2;
}
var device = args[0];
var scenario = new Scenario(device);
try
{
    await scenario.RunAsync();
}
catch (Exception e)
{
    scenario.Report("unexpected", false, $"{e.GetType().Name}: {e.Message}");
}
Console.WriteLine("SCENARIO-END");
return scenario.Failures;

internal sealed class Scenario(string device)
{
    private const long MiB = 1 << 20;

    private readonly LvmDriver _driver = new();
    private readonly CancellationToken _ct = CancellationToken.None;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly string _srUuid = Guid.NewGuid().ToString("D");

    public int Failures { get; private set; }

    public void Report(string name, bool pass, string detail)
    {
        if (!pass)
        {
            Failures++;
        }
        var clean = detail.Replace('\n', ' ').Replace('\r', ' ');
        Console.WriteLine($"SCENARIO {name} {(pass ? "PASS" : "FAIL")} {clean} t={_clock.Elapsed.TotalSeconds:F1}s");
    }

    private SrContext Sr(string? uuid = null, string? dev = null) =>
        new(uuid ?? _srUuid, new Dictionary<string, string> { [LvmDriver.DeviceKey] = dev ?? device }, new Dictionary<string, string>(), "/run/xapi-sr", NullLogger.Instance);

    private VdiSpec Spec(string uuid, long size) => new(uuid, size, "scenario", VdiType.User, false, new Dictionary<string, string>());

    private static VdiInfo Ref(string uuid) => new() { Uuid = uuid, Location = uuid };

    /// <summary>Runs an operation that must fail with an SM error code.</summary>
    private async Task ExpectSmErrorAsync(string name, int code, Func<Task> action)
    {
        try
        {
            await action();
            Report(name, false, $"expected SM error {code}, got success");
        }
        catch (SmException e)
        {
            Report(name, e.Code == code, $"code={e.Code} message='{e.Message}' detail='{e.Detail}'");
        }
    }

    private async Task<string> Sha256Async(string uuid, long? length = null)
    {
        await using var image = await _driver.OpenAsync(Sr(), Ref(uuid), writable: false, _ct);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[MiB];
        var total = length ?? image.Size;
        for (long offset = 0; offset < total; offset += buffer.Length)
        {
            var chunk = buffer.AsMemory(0, (int)Math.Min(buffer.Length, total - offset));
            await image.ReadAsync(offset, chunk, _ct);
            hash.AppendData(chunk.Span);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private async Task WriteAsync(string uuid, long offset, long length, int seed)
    {
        await using var image = await _driver.OpenAsync(Sr(), Ref(uuid), writable: true, _ct);
        var random = new Random(seed);
        var buffer = new byte[MiB];
        for (long done = 0; done < length; done += buffer.Length)
        {
            random.NextBytes(buffer);
            var chunk = buffer.AsMemory(0, (int)Math.Min(buffer.Length, length - done));
            await image.WriteAsync(offset + done, chunk, _ct);
        }
        await image.FlushAsync(_ct);
    }

    private static string Sha256Of(long size, (long Offset, long Length, int Seed)[] writes)
    {
        var bytes = new byte[size];
        foreach (var (offset, length, seed) in writes)
        {
            var random = new Random(seed);
            var buffer = new byte[MiB];
            for (long done = 0; done < length; done += buffer.Length)
            {
                random.NextBytes(buffer);
                var n = (int)Math.Min(buffer.Length, length - done);
                buffer.AsSpan(0, n).CopyTo(bytes.AsSpan((int)(offset + done)));
            }
        }
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }

    private async Task<SrStat> StatAsync() => await _driver.StatAsync(Sr(), _ct);

    public async Task RunAsync()
    {
        // device_config checks: nothing outside /dev, no traversal, block devices only.
        await ExpectSmErrorAsync("device-config-traversal", SmErrors.InvalidArg, async () => await _driver.CreateAsync(Sr(dev: "/dev/../etc/passwd"), 0, _ct));
        await ExpectSmErrorAsync("device-config-outside-dev", SmErrors.InvalidArg, async () => await _driver.CreateAsync(Sr(dev: "/etc/passwd"), 0, _ct));
        await ExpectSmErrorAsync("device-config-not-block", SmErrors.InvalidArg, async () => await _driver.CreateAsync(Sr(dev: "/dev/null"), 0, _ct));
        await ExpectSmErrorAsync("device-config-missing", SmErrors.ConfigDeviceMissing, async () => await _driver.CreateAsync(Sr(dev: "/dev/no-such-disk"), 0, _ct));
        await ExpectSmErrorAsync("probe-traversal", SmErrors.InvalidArg, async () => await _driver.ProbeAsync(new ProbeContext(new Dictionary<string, string> { [LvmDriver.DeviceKey] = "/dev/../proc/self/mem" }, new Dictionary<string, string>(), NullLogger.Instance), _ct));

        var emptyProbe = await ProbeAsync();
        Report("probe-empty-device", !emptyProbe.Contains("<SR>", StringComparison.Ordinal), emptyProbe.Replace("\n", "", StringComparison.Ordinal));

        await _driver.CreateAsync(Sr(), 0, _ct);
        await _driver.AttachAsync(Sr(), _ct);
        var initial = await StatAsync();
        var vgFree = initial.PhysicalSize - initial.PhysicalUtilisation;
        Report("sr-create", initial.PhysicalSize > 100 * MiB && initial.PhysicalUtilisation == 0, $"size={initial.PhysicalSize} used={initial.PhysicalUtilisation}");

        await ExpectSmErrorAsync("sr-create-again-exists", SmErrors.SrExists, async () => await _driver.CreateAsync(Sr(), 0, _ct));
        await ExpectSmErrorAsync("sr-create-other-uuid-in-use", SmErrors.SrInUse, async () => await _driver.CreateAsync(Sr(uuid: Guid.NewGuid().ToString("D")), 0, _ct));

        var probe = await ProbeAsync();
        Report("probe", probe.Contains($"<UUID>{_srUuid}</UUID>", StringComparison.Ordinal) && probe.Contains($"<Devlist>{device}</Devlist>", StringComparison.Ordinal)
            && probe.Contains($"<size>{initial.PhysicalSize}</size>", StringComparison.Ordinal), probe.Replace("\n", "", StringComparison.Ordinal).Replace("\t", "", StringComparison.Ordinal));

        // A VDI: thick, rounded up to whole 4 MiB extents.
        var a = Guid.NewGuid().ToString("D");
        var created = await _driver.CreateVdiAsync(Sr(), Spec(a, 6 * MiB), _ct);
        var afterCreate = await StatAsync();
        Report("vdi-create", created.VirtualSize == 8 * MiB && created.PhysicalUtilisation == 8 * MiB && afterCreate.PhysicalUtilisation == 8 * MiB,
            $"virtual={created.VirtualSize} physical={created.PhysicalUtilisation} sr-used={afterCreate.PhysicalUtilisation}");

        await WriteAsync(a, 0, 8 * MiB, seed: 1);
        var first = Sha256Of(8 * MiB, [(0, 8 * MiB, 1)]);
        var shaA = await Sha256Async(a);
        Report("write-read", shaA == first, $"sha256={shaA}");

        var s = Guid.NewGuid().ToString("D");
        var snapshot = await _driver.SnapshotVdiAsync(Sr(), Ref(a), s, _ct);
        Report("snapshot", snapshot.Created.ReadOnly && snapshot.Created.VirtualSize == 8 * MiB && snapshot.Created.PhysicalUtilisation >= 8 * MiB
            && snapshot.Created.SmConfig.GetValueOrDefault(LvmDriver.SnapshotOfKey) == a,
            $"read-only={snapshot.Created.ReadOnly} virtual={snapshot.Created.VirtualSize} cow={snapshot.Created.PhysicalUtilisation}");

        await WriteAsync(a, 2 * MiB, 4 * MiB, seed: 2);
        var second = Sha256Of(8 * MiB, [(0, 8 * MiB, 1), (2 * MiB, 4 * MiB, 2)]);
        var shaAfter = await Sha256Async(a);
        var shaSnap = await Sha256Async(s);
        Report("write-after-snapshot", shaAfter == second && shaSnap == first, $"origin={shaAfter} snapshot={shaSnap}");

        await ExpectSmErrorAsync("snapshot-of-snapshot-refused", SmErrors.VdiSnapshot, async () => await _driver.SnapshotVdiAsync(Sr(), Ref(s), Guid.NewGuid().ToString("D"), _ct));
        await ExpectSmErrorAsync("write-open-of-snapshot-refused", SmErrors.VdiUnavailable, async () => await (await _driver.OpenAsync(Sr(), Ref(s), writable: true, _ct)).DisposeAsync());

        var c = Guid.NewGuid().ToString("D");
        var clone = await _driver.CloneVdiAsync(Sr(), Ref(s), c, _ct);
        var shaClone = await Sha256Async(c);
        Report("clone-of-snapshot", !clone.Created.ReadOnly && clone.Created.VirtualSize == 8 * MiB && shaClone == first && await Sha256Async(s) == first && await Sha256Async(a) == second,
            $"clone={shaClone} read-only={clone.Created.ReadOnly}");

        await WriteAsync(c, 0, 1 * MiB, seed: 3);
        Report("clone-is-independent", await Sha256Async(s) == first && await Sha256Async(c) == Sha256Of(8 * MiB, [(0, 8 * MiB, 1), (0, 1 * MiB, 3)]), "snapshot unchanged after writing the clone");

        var scan = await _driver.ScanAsync(Sr(), _ct);
        var uuids = scan.Vdis.Select(v => v.Uuid).Order().ToList();
        Report("scan", uuids.SequenceEqual(new[] { a, s, c }.Order()) && scan.Vdis.All(v => v.SmConfig.GetValueOrDefault(LvmDriver.VdiTypeKey) == "aio"),
            string.Join(",", scan.Vdis.Select(v => $"{v.Uuid[..8]}:{v.VirtualSize}/{v.PhysicalUtilisation}{(v.ReadOnly ? ":ro" : "")}")));

        await ExpectSmErrorAsync("delete-origin-with-snapshot-refused", SmErrors.VdiInUse, async () => await _driver.DeleteVdiAsync(Sr(), Ref(a), _ct));
        await ExpectSmErrorAsync("resize-origin-with-snapshot-refused", SmErrors.VdiResize, async () => await _driver.ResizeVdiAsync(Sr(), Ref(a), 40 * MiB, _ct));
        await ExpectSmErrorAsync("sr-delete-not-empty", SmErrors.SrNotEmpty, async () => await _driver.DeleteAsync(Sr(), _ct));

        var resized = await _driver.ResizeVdiAsync(Sr(), Ref(c), 10 * MiB, _ct);
        await using (var image = await _driver.OpenAsync(Sr(), Ref(c), writable: false, _ct))
        {
            var keptSha = await Sha256Async(c, 8 * MiB);
            Report("resize", resized.VirtualSize == 12 * MiB && image.Size == 12 * MiB && keptSha == Sha256Of(8 * MiB, [(0, 8 * MiB, 1), (0, 1 * MiB, 3)]),
                $"virtual={resized.VirtualSize} device={image.Size}");
        }
        await ExpectSmErrorAsync("resize-shrink-refused", SmErrors.VdiSize, async () => await _driver.ResizeVdiAsync(Sr(), Ref(c), 4 * MiB, _ct));

        // The VG fills: refused before lvcreate with what was asked and what is left.
        var beforeFull = await StatAsync();
        var free = beforeFull.PhysicalSize - beforeFull.PhysicalUtilisation;
        try
        {
            await _driver.CreateVdiAsync(Sr(), Spec(Guid.NewGuid().ToString("D"), free + 1), _ct);
            Report("sr-full", false, "a VDI larger than the free space was created");
        }
        catch (SrFullException e)
        {
            var after = await StatAsync();
            Report("sr-full", e.Requested == free + 4 * MiB && e.Available == free && after == beforeFull, $"requested={e.Requested} available={e.Available} free={free}");
        }
        var filler = Guid.NewGuid().ToString("D");
        await _driver.CreateVdiAsync(Sr(), Spec(filler, free), _ct);
        try
        {
            await _driver.CreateVdiAsync(Sr(), Spec(Guid.NewGuid().ToString("D"), 1), _ct);
            Report("sr-full-exactly", false, "a VDI was created in a full VG");
        }
        catch (SrFullException e)
        {
            Report("sr-full-exactly", e.Available == 0 && e.Requested == 4 * MiB && (await StatAsync()).PhysicalUtilisation == beforeFull.PhysicalSize, $"requested={e.Requested} available={e.Available}");
        }
        try
        {
            await _driver.SnapshotVdiAsync(Sr(), Ref(c), Guid.NewGuid().ToString("D"), _ct);
            Report("snapshot-sr-full", false, "a snapshot was made in a full VG");
        }
        catch (SrFullException e)
        {
            Report("snapshot-sr-full", e.Available == 0 && e.Requested > 12 * MiB, $"requested={e.Requested} available={e.Available}");
        }

        // Detach deactivates every LV; attach brings them back with their data.
        await _driver.DetachAsync(Sr(), _ct);
        var goneAfterDetach = !File.Exists(LvmCommands.DevicePath(_srUuid, a));
        await _driver.AttachAsync(Sr(), _ct);
        Report("detach-attach", goneAfterDetach && await Sha256Async(a) == second && await Sha256Async(s) == first, $"device node gone after detach={goneAfterDetach}");

        // Deleting returns the space: the snapshot first, then its origin.
        await _driver.DeleteVdiAsync(Sr(), Ref(s), _ct);
        var afterSnapshotDelete = await StatAsync();
        Report("delete-snapshot", await Sha256Async(a) == second && afterSnapshotDelete.PhysicalUtilisation < beforeFull.PhysicalSize, $"sr-used={afterSnapshotDelete.PhysicalUtilisation}");
        foreach (var uuid in new[] { a, c, filler })
        {
            await _driver.DeleteVdiAsync(Sr(), Ref(uuid), _ct);
        }
        await _driver.DeleteVdiAsync(Sr(), Ref(a), _ct);
        var end = await StatAsync();
        Report("delete-frees-space", end.PhysicalUtilisation == 0 && end.PhysicalSize - end.PhysicalUtilisation == vgFree && (await _driver.ScanAsync(Sr(), _ct)).Vdis.Count == 0,
            $"sr-used={end.PhysicalUtilisation} free={end.PhysicalSize - end.PhysicalUtilisation} initial-free={vgFree}");

        await _driver.DetachAsync(Sr(), _ct);
        await _driver.DeleteAsync(Sr(), _ct);
        var probeAfter = await ProbeAsync();
        Report("sr-delete", !probeAfter.Contains("<SR>", StringComparison.Ordinal), probeAfter.Replace("\n", "", StringComparison.Ordinal));

        // The device is free again: another SR can be made on it.
        var second2 = Guid.NewGuid().ToString("D");
        await _driver.CreateAsync(Sr(uuid: second2), 0, _ct);
        var probeNew = await ProbeAsync();
        await _driver.DeleteAsync(Sr(uuid: second2), _ct);
        Report("sr-recreate", probeNew.Contains($"<UUID>{second2}</UUID>", StringComparison.Ordinal), "");
    }

    private async Task<string> ProbeAsync() =>
        await _driver.ProbeAsync(new ProbeContext(new Dictionary<string, string> { [LvmDriver.DeviceKey] = device }, new Dictionary<string, string>(), NullLogger.Instance), _ct);
}
