using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.Drivers.Ext;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Tests.Nfs;

/// <summary>
/// The chain driver's lifecycle with real qemu-img and data checked by checksum, run once per
/// file store: on a local directory (<see cref="LocalChainDriverTests"/>) and on a real NFS server
/// (<see cref="NfsDriverTests"/>), so the NFS driver is shown to keep the ext driver's behaviour.
/// </summary>
public abstract class ChainDriverScenarios
{
    protected const long MiB = 1L << 20;

    private readonly List<string> _temporary = [];

    protected abstract ExtDriver Driver { get; }

    protected abstract IReadOnlyDictionary<string, string> DeviceConfig { get; }

    /// <summary>The SR's directory as the server's own filesystem sees it, to change things behind the driver's back.</summary>
    protected abstract string BackDoor(string srUuid);

    protected SrContext NewSr() =>
        new(Guid.NewGuid().ToString("D"), DeviceConfig, new Dictionary<string, string>(), Scratch(), NullLogger.Instance);

    [TearDown]
    public void RemoveScratch()
    {
        foreach (var path in _temporary)
        {
            if (Directory.Exists(path))
            {
                Directory.Delete(path, recursive: true);
            }
        }
        _temporary.Clear();
    }

    protected string Scratch()
    {
        var path = Directory.CreateTempSubdirectory("xapi-chain-").FullName;
        _temporary.Add(path);
        return path;
    }

    [Test]
    public async Task Snapshot_clone_resize_and_delete_keep_every_disk_s_data_and_the_collector_gives_the_space_back()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.AttachAsync(sr, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(16 * MiB), default);
        Assert.That(vdi.VirtualSize, Is.EqualTo(16 * MiB));

        var original = RandomNumberGenerator.GetBytes((int)(16 * MiB));
        await WriteAsync(sr, vdi, original);

        var snapshot = await Driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        Assert.That(snapshot.Created.ReadOnly, Is.True);
        Assert.That(snapshot.NewBase!.Hidden, Is.True);
        var changed = (byte[])original.Clone();
        var more = RandomNumberGenerator.GetBytes((int)MiB);
        more.CopyTo(changed, 3 * MiB);
        await WriteAsync(sr, vdi, changed);
        var clone = await Driver.CloneVdiAsync(sr, snapshot.Created, Guid.NewGuid().ToString("D"), default);
        Assert.That(clone.Created.ReadOnly, Is.False);

        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(changed)), "the VDI after its snapshot and a write");
        Assert.That(await ReadAsync(sr, snapshot.Created), Is.EqualTo(Sha(original)), "the snapshot");
        Assert.That(await ReadAsync(sr, clone.Created), Is.EqualTo(Sha(original)), "the clone of the snapshot");

        var resized = await Driver.ResizeVdiAsync(sr, vdi, 32 * MiB, default);
        Assert.That(resized.VirtualSize, Is.EqualTo(32 * MiB));
        var grown = new byte[32 * MiB];
        changed.CopyTo(grown, 0);
        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(grown)), "the resized VDI keeps its data and reads zeros above it");

        var scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Where(v => !v.Hidden).Select(v => v.Uuid), Is.EquivalentTo(new[] { vdi.Uuid, snapshot.Created.Uuid, clone.Created.Uuid }));
        Assert.That(scan.Vdis.Count(v => v.Hidden), Is.EqualTo(2), "the snapshot's base and the clone's base");
        var before = scan.Stat.PhysicalUtilisation;

        await Driver.DeleteVdiAsync(sr, snapshot.Created, default);
        await Driver.DeleteVdiAsync(sr, clone.Created, default);
        var steps = await CollectAllAsync(sr);
        Assert.That(steps, Is.Not.Empty);

        scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Select(v => v.Uuid), Is.EqualTo(new[] { vdi.Uuid }), "the chain coalesced into the one VDI left");
        Assert.That(scan.Vdis[0].ParentUuid, Is.Null);
        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(grown)), "the VDI after the collector merged its chain");
        Assert.That(scan.Stat.PhysicalUtilisation, Is.LessThan(before), "the deleted snapshot's and clone's space");

        await Driver.DeleteVdiAsync(sr, vdi, default);
        await Driver.DeleteAsync(sr, default);
        Assert.That(Directory.Exists(BackDoor(sr.Uuid)), Is.False);
        var gone = await Assert.ThrowsAsync<SmException>(async () => await Driver.ScanAsync(sr, default));
        Assert.That(gone!.Code, Is.EqualTo(SmErrors.SrUnavailable));
    }

    [Test]
    public async Task Scan_finds_an_image_added_behind_the_driver_s_back_forgets_one_removed_and_ignores_links_and_foreign_backing_files()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.AttachAsync(sr, default);
        var directory = BackDoor(sr.Uuid);
        var added = Guid.NewGuid().ToString("D");
        await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", Path.Combine(directory, added + ".qcow2"), (8 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture)], default);
        var outside = Path.Combine(Scratch(), "outside.qcow2");
        await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", outside, "4194304"], default);
        File.CreateSymbolicLink(Path.Combine(directory, Guid.NewGuid().ToString("D") + ".qcow2"), outside);
        var foreign = Guid.NewGuid().ToString("D");
        await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", "-u", "-b", outside, "-F", "qcow2", Path.Combine(directory, foreign + ".qcow2"), "4194304"], default);

        var scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Select(v => (v.Uuid, v.VirtualSize)), Is.EqualTo(new[] { (added, 8 * MiB) }));

        File.Delete(Path.Combine(directory, added + ".qcow2"));
        scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis, Is.Empty);
    }

    [Test]
    public async Task A_snapshot_interrupted_after_renaming_the_source_is_undone_on_attach_with_the_source_s_data_intact()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.AttachAsync(sr, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(8 * MiB), default);
        var data = RandomNumberGenerator.GetBytes((int)(8 * MiB));
        await WriteAsync(sr, vdi, data);

        // Where hard links are refused, a snapshot renames the source to the new base; killed right
        // after, only the journal and the base are left.
        var directory = BackDoor(sr.Uuid);
        var baseUuid = Guid.NewGuid().ToString("D");
        var created = Guid.NewGuid().ToString("D");
        File.WriteAllText(Path.Combine(directory, ".journal", $"snapshot-{vdi.Uuid}.json"),
            JsonSerializer.Serialize(new { Kind = "snapshot", Subject = vdi.Uuid, Parent = (string?)null, Base = baseUuid, Created = created }));
        File.WriteAllText(Path.Combine(directory, baseUuid + ".hidden"), "");
        File.Move(Path.Combine(directory, vdi.Uuid + ".qcow2"), Path.Combine(directory, baseUuid + ".qcow2"));

        await Driver.AttachAsync(sr, default);

        var scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Select(v => v.Uuid), Is.EqualTo(new[] { vdi.Uuid }));
        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(data)));
        Assert.That(Directory.EnumerateFiles(directory).Select(Path.GetFileName), Has.None.Contains(baseUuid));
    }

    [Test]
    public async Task A_chain_merge_interrupted_after_its_journal_is_finished_on_attach_with_the_data_intact()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.AttachAsync(sr, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(8 * MiB), default);
        var data = RandomNumberGenerator.GetBytes((int)(8 * MiB));
        await WriteAsync(sr, vdi, data);
        var snapshot = await Driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        var more = (byte[])data.Clone();
        RandomNumberGenerator.GetBytes((int)MiB).CopyTo(more, 0);
        await WriteAsync(sr, vdi, more);
        // A leaf snapshot's file goes at once, which leaves the VDI the only child of the hidden base.
        await Driver.DeleteVdiAsync(sr, snapshot.Created, default);

        // Killed with the journal written and nothing else done: the VDI still reads through the base.
        var directory = BackDoor(sr.Uuid);
        var baseUuid = snapshot.NewBase!.Uuid;
        File.WriteAllText(Path.Combine(directory, ".journal", $"absorb-{vdi.Uuid}.json"),
            JsonSerializer.Serialize(new { Kind = "absorb", Subject = vdi.Uuid, Parent = baseUuid, Base = (string?)null, Created = (string?)null }));

        await Driver.AttachAsync(sr, default);

        var scan = await Driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Select(v => (v.Uuid, v.ParentUuid)), Is.EqualTo(new[] { (vdi.Uuid, (string?)null) }));
        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(more)));
        Assert.That(Directory.EnumerateFiles(Path.Combine(directory, ".journal")), Is.Empty);
    }

    [Test]
    public async Task The_data_path_opens_a_snapshot_s_chain_through_qemu_nbd_and_what_it_writes_qemu_img_reads_back()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(8 * MiB), default);
        var data = RandomNumberGenerator.GetBytes((int)(8 * MiB));
        await WriteAsync(sr, vdi, data);
        var snapshot = await Driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        var written = RandomNumberGenerator.GetBytes((int)MiB);

        await using (var image = await Driver.OpenAsync(sr, vdi, writable: true, default))
        {
            Assert.That(image.Size, Is.EqualTo(8 * MiB));
            var read = new byte[8 * MiB];
            await image.ReadAsync(0, read, default);
            Assert.That(Sha(read), Is.EqualTo(Sha(data)), "read through qemu-nbd from the base under the empty overlay");
            await image.WriteAsync(5 * MiB, written, default);
            await image.FlushAsync(default);
        }

        var before = data.AsSpan((int)(5 * MiB), (int)MiB).ToArray();
        written.CopyTo(data, 5 * MiB);
        Assert.That(await ReadAsync(sr, vdi), Is.EqualTo(Sha(data)));
        await using var snapshotImage = await Driver.OpenAsync(sr, snapshot.Created, writable: false, default);
        var unchanged = new byte[MiB];
        await snapshotImage.ReadAsync(5 * MiB, unchanged, default);
        Assert.That(unchanged, Is.EqualTo(before), "the snapshot keeps what was there");
    }

    [Test]
    public async Task Creating_an_SR_where_one_already_has_files_fails_SR_exists()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.CreateVdiAsync(sr, Spec(2 * MiB), default);
        var error = await Assert.ThrowsAsync<SmException>(async () => await Driver.CreateAsync(sr, 0, default));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.SrExists));
    }

    protected static VdiSpec Spec(long size) =>
        new(Guid.NewGuid().ToString("D"), size, "disk", Xapi.Model.VdiType.User, false, new Dictionary<string, string>());

    private async Task<List<GcStep>> CollectAllAsync(SrContext sr)
    {
        var steps = new List<GcStep>();
        for (var i = 0; i < 20; i++)
        {
            var step = await Driver.CollectGarbageAsync(sr, _ => false, default);
            if (step.Kind == GcStepKind.Idle)
            {
                return steps;
            }
            Assert.That(step.Kind, Is.Not.EqualTo(GcStepKind.Deferred));
            steps.Add(step);
        }
        Assert.Fail($"the collector did not finish in 20 steps: {string.Join(", ", steps)}");
        return steps;
    }

    /// <summary>Writes the whole disk through the path the driver gives a domain (a local path or an nfs:// URL).</summary>
    protected async Task WriteAsync(SrContext sr, VdiInfo vdi, byte[] content)
    {
        var source = Path.Combine(Scratch(), "in.raw");
        await File.WriteAllBytesAsync(source, content);
        var attachment = await Driver.AttachVdiAsync(sr, vdi, writable: true, default);
        await QemuImg.RunAsync(["convert", "-n", "-f", "raw", "-O", attachment.Format, source, attachment.Path], default);
    }

    /// <summary>The SHA-256 of the whole disk as read through the driver's path.</summary>
    protected async Task<string> ReadAsync(SrContext sr, VdiInfo vdi)
    {
        var target = Path.Combine(Scratch(), "out.raw");
        var attachment = await Driver.AttachVdiAsync(sr, vdi, writable: false, default);
        await QemuImg.RunAsync(["convert", "-f", attachment.Format, "-O", "raw", attachment.Path, target], default);
        return Sha(await File.ReadAllBytesAsync(target));
    }

    protected static string Sha(byte[] data) => Convert.ToHexString(SHA256.HashData(data));
}
