using static Xapi.Server.Tests.Api.Storage.StorageKit;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>
/// The life of a disk on the local ext SR, driven over the wire as xe and backup tools drive it,
/// with every byte checked: data imported, snapshotted, overwritten, cloned, exported raw and as
/// VHD (read back by qemu-img, an implementation independent of ours), resized, copied, destroyed.
/// </summary>
public class ExtLifecycleTests
{
    private const long Size = 16 * MiB;

    // Data at odd places, with holes between: the first sector, inside a block, across the
    // boundary of two 2 MiB blocks, the last sector.
    private static readonly (long, int)[] First = [(0, 4096), (MiB + 13, 777), (6 * MiB - 100, 300), (Size - 512, 512)];

    // What the second import (of the first 4 MiB only) changes: part of the first data, and a new run.
    private static readonly (long, int)[] Second = [(MiB + 500, 1000), (3 * MiB + 511, 70_000)];

    private const int SecondImportBytes = (int)(4 * MiB);

    private static readonly byte[] Original = Pattern(Size, 1, First);

    private static readonly byte[] Later = Overlay(Original, Pattern(Size, 2, Second), Second);

    [Test]
    public async Task A_snapshot_keeps_the_imported_data_while_the_disk_is_overwritten_and_its_clone_and_both_exports_say_so()
    {
        await using var kit = await StartAsync();
        var sr = await kit.DefaultSrAsync();
        var vdi = await kit.CreateVdiAsync(sr, Size);
        await kit.ImportOkAsync(vdi, Original);
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;

        // A second import of only the first 4 MiB: the rest of the disk stays as it was.
        await kit.ImportOkAsync(vdi, Later.AsSpan(0, SecondImportBytes).ToArray());
        var clone = (string)(await kit.Client.InvokeAsync("VDI.clone", snapshot, new Dictionary<string, object?>()))!;

        var vdiRaw = await kit.ExportBytesAsync(vdi);
        var vdiVhd = await kit.ExportBytesAsync(vdi, "vhd");
        var snapshotRaw = await kit.ExportBytesAsync(snapshot);
        var cloneRaw = await kit.ExportBytesAsync(clone);
        var cloneVhd = await kit.ExportBytesAsync(clone, "vhd");
        Assert.Multiple(async () =>
        {
            Assert.That(Sha256(vdiRaw), Is.EqualTo(Sha256(Later)), "the disk reads as the second import left it");
            Assert.That(Sha256(await QemuVhdToRawAsync(vdiVhd)), Is.EqualTo(Sha256(Later)), "qemu-img reads the disk's VHD export as the same bytes");
            Assert.That(Sha256(snapshotRaw), Is.EqualTo(Sha256(Original)), "the snapshot kept the first import");
            Assert.That(Sha256(cloneRaw), Is.EqualTo(Sha256(Original)), "the clone of the snapshot holds the first import");
            Assert.That(Sha256(await QemuVhdToRawAsync(cloneVhd)), Is.EqualTo(Sha256(Original)));
            Assert.That(vdiVhd.Length, Is.LessThan(Size), "the VHD export is sparse: the disk's holes are not sent");
        });
    }

    [Test]
    public async Task A_vhd_export_imports_into_a_fresh_disk_and_a_base_export_applied_to_a_copy_of_the_base_gives_the_later_disk()
    {
        await using var kit = await StartAsync();
        var sr = await kit.DefaultSrAsync();
        var vdi = await kit.CreateVdiAsync(sr, Size);
        await kit.ImportOkAsync(vdi, Original);
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        await kit.ImportOkAsync(vdi, Later.AsSpan(0, SecondImportBytes).ToArray());

        var fresh = await kit.CreateVdiAsync(sr, Size, "restored");
        await kit.ImportOkAsync(fresh, await kit.ExportBytesAsync(vdi, "vhd"), "vhd");

        // An incremental backup: the base restored in full, then the difference laid over it.
        var difference = await kit.ExportBytesAsync(vdi, "vhd", snapshot);
        var restored = await kit.CreateVdiAsync(sr, Size, "incremental");
        await kit.ImportOkAsync(restored, await kit.ExportBytesAsync(snapshot, "vhd"), "vhd");
        await kit.ImportOkAsync(restored, difference, "vhd");

        Assert.Multiple(async () =>
        {
            Assert.That(Sha256(await kit.ExportBytesAsync(fresh)), Is.EqualTo(Sha256(Later)));
            Assert.That(Sha256(await kit.ExportBytesAsync(restored)), Is.EqualTo(Sha256(Later)), "base plus difference is the later disk");
            Assert.That(difference.Length, Is.LessThanOrEqualTo(2 * (2 * MiB + 512) + 4096), "the difference holds only the two blocks the second import wrote");
        });
    }

    [Test]
    public async Task A_resized_disk_keeps_its_data_copies_to_another_sr_with_progress_and_its_space_returns_when_destroyed()
    {
        await using var kit = await StartAsync();
        var sr = await kit.DefaultSrAsync();
        var baseline = await kit.SettledUtilisationAsync(sr);
        var vdi = await kit.CreateVdiAsync(sr, Size);
        await kit.ImportOkAsync(vdi, Original);
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        await kit.ImportOkAsync(vdi, Later);

        await kit.Client.InvokeAsync("VDI.resize", vdi, Number(Size + 4 * MiB));
        var resized = new byte[Size + 4 * MiB];
        Later.CopyTo(resized, 0);
        Assert.That(await kit.LongFieldAsync("VDI", vdi, "virtual_size"), Is.EqualTo(Size + 4 * MiB));
        Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(Sha256(resized)), "the data is kept and the new end reads as zeros");

        var location = Directory.CreateTempSubdirectory("xapi-second-sr-").FullName;
        using var cleanup = new DirectoryCleanup(location);
        var other = await kit.CreateSrAsync("ext", new Dictionary<string, object?> { ["location"] = location }, "second");
        var task = (string)(await kit.Client.InvokeAsync("Async.VDI.copy", vdi, other, "OpaqueRef:NULL", "OpaqueRef:NULL"))!;
        var done = await kit.Client.WatchTaskAsync(task);
        Assert.That(done["status"], Is.EqualTo("success"), string.Join(" ", (IReadOnlyList<object?>)done["error_info"]!));
        Assert.That(done["progress"], Is.EqualTo(1.0));
        var copy = (string)Xapi.Protocol.XmlRpcReader.ReadValueFragment((string)done["result"]!, Xapi.Protocol.RpcLimits.Default)!;
        Assert.Multiple(async () =>
        {
            Assert.That((await kit.RecordAsync("VDI", copy))["SR"], Is.EqualTo(other));
            Assert.That(await kit.LongFieldAsync("VDI", copy, "virtual_size"), Is.EqualTo(Size + 4 * MiB));
            Assert.That(Sha256(await kit.ExportBytesAsync(copy)), Is.EqualTo(Sha256(resized)));
        });

        var used = await kit.SettledUtilisationAsync(sr);
        Assert.That(used, Is.GreaterThan(baseline + 64 * 1024), "the disk and its snapshot take space");
        foreach (var each in new[] { vdi, snapshot })
        {
            await kit.Client.InvokeAsync("VDI.destroy", each);
        }
        Assert.Multiple(async () =>
        {
            Assert.That(await kit.SettledUtilisationAsync(sr), Is.EqualTo(baseline), "every byte the disks took comes back once the collector ran");
            Assert.That(await kit.VdisOfAsync(sr), Is.Empty, "no hidden base is left behind");
        });
        await kit.Client.InvokeAsync("VDI.destroy", copy);
        Assert.That(await kit.SettledUtilisationAsync(other), Is.LessThan(64 * 1024));
    }

    [Test]
    public async Task A_raw_import_of_a_mostly_empty_disk_keeps_it_thin()
    {
        await using var kit = await StartAsync();
        var sr = await kit.DefaultSrAsync();
        var vdi = await kit.CreateVdiAsync(sr, 32 * MiB);
        // A few bytes in each 4 MiB piece the importer reads at once.
        var data = Pattern(32 * MiB, 14, Enumerable.Range(0, 8).Select(i => (i * 4 * MiB + 65_536 + 7, 100)).ToArray());
        await kit.ImportOkAsync(vdi, data);
        await kit.SettledUtilisationAsync(sr);
        Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(Sha256(data)));
        Assert.That(await kit.LongFieldAsync("VDI", vdi, "physical_utilisation"), Is.LessThan(4 * MiB), "only the clusters holding data take space");

        // Zeros imported over the data read as zeros.
        await kit.ImportOkAsync(vdi, new byte[32 * MiB]);
        Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(Sha256(new byte[32 * MiB])));
    }
}
