using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.Drivers.Ext;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Tests.Ext;

/// <summary>
/// A snapshot that fails inside a running daemon (not a crash): the daemon carries on, the same
/// VDI is written and snapshotted again, the collector runs, and the SR is attached again (which
/// replays whatever journals are left). Every VDI keeps its bytes, checked by sha256, and no VDI
/// appears that the failed call never returned. Run with hard links (ext) and with the rename a
/// store without links uses, failing once the base is made and once the source is its overlay.
/// </summary>
public class SnapshotFailureTests
{
    private const long MiB = 1L << 20;
    private const long Size = 8 * MiB;

    public enum FailAt
    {
        /// <summary>The base holds the source's data; the source is not yet an overlay on it.</summary>
        SourceOverlay,

        /// <summary>The source reads through the base; the new VDI is not made yet.</summary>
        CreatedOverlay,
    }

    private string _location = "";
    private readonly List<string> _temporary = [];

    [SetUp]
    public void MakeLocation() => _location = Scratch();

    [TearDown]
    public void RemoveScratch()
    {
        foreach (var path in _temporary.Where(Directory.Exists))
        {
            Directory.Delete(path, recursive: true);
        }
        _temporary.Clear();
    }

    [Test]
    public async Task A_failed_snapshot_then_a_good_one_the_collector_and_a_new_attach_keep_every_vdi_s_data(
        [Values] bool hardLinks, [Values] FailAt failAt)
    {
        var driver = new FaultyExtDriver { HardLinks = hardLinks };
        var sr = NewSr();
        await driver.CreateAsync(sr, 0, default);
        await driver.AttachAsync(sr, default);
        var vdi = await driver.CreateVdiAsync(sr, Spec(Size), default);
        var first = RandomNumberGenerator.GetBytes((int)Size);
        await WriteAsync(driver, sr, vdi, first);

        var failed = Guid.NewGuid().ToString("D");
        driver.FailNextMoveTo = (failAt == FailAt.SourceOverlay ? vdi.Uuid : failed) + ".qcow2";
        await Assert.ThrowsAsync<IOException>(async () => await driver.SnapshotVdiAsync(sr, vdi, failed, default));
        Assert.That(driver.FailNextMoveTo, Is.Null, "the injected failure was hit");
        Assert.That(await ReadAsync(driver, sr, vdi), Is.EqualTo(Sha(first)), "the source right after the failed snapshot");

        var second = Changed(first, 2);
        await WriteAsync(driver, sr, vdi, second);
        var snapshot = await driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        var third = Changed(second, 5);
        await WriteAsync(driver, sr, vdi, third);
        await CollectAllAsync(driver, sr);

        await new FaultyExtDriver { HardLinks = hardLinks }.AttachAsync(sr, default);
        await CollectAllAsync(driver, sr);

        var scan = await driver.ScanAsync(sr, default);
        Assert.Multiple(async () =>
        {
            Assert.That(scan.Vdis.Where(v => !v.Hidden).Select(v => v.Uuid), Is.EquivalentTo(new[] { vdi.Uuid, snapshot.Created.Uuid }), "the VDIs the calls returned, no other");
            Assert.That(await ReadAsync(driver, sr, vdi), Is.EqualTo(Sha(third)), "the VDI");
            Assert.That(await ReadAsync(driver, sr, snapshot.Created), Is.EqualTo(Sha(second)), "the good snapshot");
            Assert.That(Directory.EnumerateFiles(Path.Combine(SrPath(sr), ".journal")), Is.Empty, "journals left");
        });
    }

    /// <summary>
    /// The failed call returned no VDI, so the next attach must not finish making it: a VDI the
    /// caller never heard of would appear on the SR and keep the base from being collected.
    /// </summary>
    [Test]
    public async Task A_snapshot_that_failed_after_the_source_became_an_overlay_makes_no_vdi_at_the_next_attach([Values] bool hardLinks)
    {
        var driver = new FaultyExtDriver { HardLinks = hardLinks };
        var sr = NewSr();
        await driver.CreateAsync(sr, 0, default);
        await driver.AttachAsync(sr, default);
        var vdi = await driver.CreateVdiAsync(sr, Spec(Size), default);
        var data = RandomNumberGenerator.GetBytes((int)Size);
        await WriteAsync(driver, sr, vdi, data);

        var failed = Guid.NewGuid().ToString("D");
        driver.FailNextMoveTo = failed + ".qcow2";
        await Assert.ThrowsAsync<IOException>(async () => await driver.SnapshotVdiAsync(sr, vdi, failed, default));

        await new FaultyExtDriver { HardLinks = hardLinks }.AttachAsync(sr, default);
        await CollectAllAsync(driver, sr);

        var scan = await driver.ScanAsync(sr, default);
        Assert.That(scan.Vdis.Select(v => v.Uuid), Is.EqualTo(new[] { vdi.Uuid }), "the source alone, its chain collected");
        Assert.That(await ReadAsync(driver, sr, vdi), Is.EqualTo(Sha(data)));
    }

    /// <summary>
    /// A snapshot journal whose base others read through since (here: a later snapshot's base and
    /// the first snapshot) no longer describes the chain: undoing it would delete that base, and
    /// with it the data of every VDI above it. The attach drops such a journal and changes nothing.
    /// </summary>
    [Test]
    public async Task A_stale_snapshot_journal_whose_base_others_read_through_is_dropped_at_attach_without_touching_the_chain()
    {
        var driver = new FaultyExtDriver();
        var sr = NewSr();
        await driver.CreateAsync(sr, 0, default);
        await driver.AttachAsync(sr, default);
        var vdi = await driver.CreateVdiAsync(sr, Spec(Size), default);
        var first = RandomNumberGenerator.GetBytes((int)Size);
        await WriteAsync(driver, sr, vdi, first);
        var older = await driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        var second = Changed(first, 3);
        await WriteAsync(driver, sr, vdi, second);
        var newer = await driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        var third = Changed(second, 6);
        await WriteAsync(driver, sr, vdi, third);

        // The journal of the first snapshot, as if it had been left behind: its base now has the
        // second snapshot's base and the first snapshot as children, and the VDI is not one of them.
        File.WriteAllText(Path.Combine(SrPath(sr), ".journal", $"snapshot-{vdi.Uuid}.json"),
            System.Text.Json.JsonSerializer.Serialize(new { Kind = "snapshot", Subject = vdi.Uuid, Parent = (string?)null, Base = older.NewBase!.Uuid, Created = Guid.NewGuid().ToString("D") }));
        var files = Directory.EnumerateFiles(SrPath(sr)).Order().ToList();

        await new FaultyExtDriver().AttachAsync(sr, default);

        Assert.Multiple(async () =>
        {
            Assert.That(Directory.EnumerateFiles(SrPath(sr)).Order().ToList(), Is.EqualTo(files), "no image was made or deleted");
            Assert.That(Directory.EnumerateFiles(Path.Combine(SrPath(sr), ".journal")), Is.Empty, "the stale journal");
            Assert.That(await ReadAsync(driver, sr, vdi), Is.EqualTo(Sha(third)), "the VDI");
            Assert.That(await ReadAsync(driver, sr, newer.Created), Is.EqualTo(Sha(second)), "the second snapshot");
            Assert.That(await ReadAsync(driver, sr, older.Created), Is.EqualTo(Sha(first)), "the first snapshot");
        });
    }

    private SrContext NewSr() =>
        new(Guid.NewGuid().ToString("D"), new Dictionary<string, string> { [ExtDriver.LocationKey] = _location }, new Dictionary<string, string>(), Scratch(), NullLogger.Instance);

    private string SrPath(SrContext sr) => Path.Combine(_location, sr.Uuid);

    private string Scratch()
    {
        var path = Directory.CreateTempSubdirectory("xapi-snapfail-").FullName;
        _temporary.Add(path);
        return path;
    }

    private static VdiSpec Spec(long size) =>
        new(Guid.NewGuid().ToString("D"), size, "disk", Xapi.Model.VdiType.User, false, new Dictionary<string, string>());

    private static byte[] Changed(byte[] data, int mib)
    {
        var changed = (byte[])data.Clone();
        RandomNumberGenerator.GetBytes((int)MiB).CopyTo(changed, mib * MiB);
        return changed;
    }

    private static async Task CollectAllAsync(ExtDriver driver, SrContext sr)
    {
        for (var i = 0; i < 20; i++)
        {
            var step = await driver.CollectGarbageAsync(sr, _ => false, default);
            if (step.Kind == GcStepKind.Idle)
            {
                return;
            }
            Assert.That(step.Kind, Is.Not.EqualTo(GcStepKind.Deferred));
        }
        Assert.Fail("the collector did not finish in 20 steps");
    }

    private async Task WriteAsync(ExtDriver driver, SrContext sr, VdiInfo vdi, byte[] content)
    {
        var source = Path.Combine(Scratch(), "in.raw");
        await File.WriteAllBytesAsync(source, content);
        var attachment = await driver.AttachVdiAsync(sr, vdi, writable: true, default);
        await QemuImg.RunAsync(["convert", "-n", "-f", "raw", "-O", attachment.Format, source, attachment.Path], default);
    }

    private async Task<string> ReadAsync(ExtDriver driver, SrContext sr, VdiInfo vdi)
    {
        var target = Path.Combine(Scratch(), "out.raw");
        var attachment = await driver.AttachVdiAsync(sr, vdi, writable: false, default);
        await QemuImg.RunAsync(["convert", "-f", attachment.Format, "-O", "raw", attachment.Path, target], default);
        return Sha(await File.ReadAllBytesAsync(target));
    }

    private static string Sha(byte[] data) => Convert.ToHexString(SHA256.HashData(data));

    /// <summary>The ext driver over a store that can refuse hard links (as NFS does) and fail one rename.</summary>
    private sealed class FaultyExtDriver : ExtDriver
    {
        public bool HardLinks { get; init; } = true;

        /// <summary>The file name whose next rename onto it fails, once.</summary>
        public string? FailNextMoveTo { get; set; }

        protected override ISrFileStore StoreOf(SrContext sr) => new FaultyStore(base.StoreOf(sr), this);

        private sealed class FaultyStore(ISrFileStore inner, FaultyExtDriver owner) : ISrFileStore
        {
            public string Root => inner.Root;
            public string JournalDirectory => inner.JournalDirectory;
            public bool CanCommitIntoBacking => inner.CanCommitIntoBacking;
            public string PathOf(string uuid, string extension) => inner.PathOf(uuid, extension);
            public string PathIn(string directory, string name) => inner.PathIn(directory, name);
            public void CheckRoot() => inner.CheckRoot();
            public void CreateRoot() => inner.CreateRoot();
            public void DeleteRoot() => inner.DeleteRoot();
            public (IReadOnlyList<string> Uuids, IReadOnlyList<string> Skipped) List(string extension) => inner.List(extension);
            public IReadOnlyList<string> Files(string directory, string suffix) => inner.Files(directory, suffix);
            public bool Exists(string path) => inner.Exists(path);
            public bool IsRegularFile(string path) => inner.IsRegularFile(path);
            public string ReadText(string path) => inner.ReadText(path);
            public void WriteDurably(string path, string content) => inner.WriteDurably(path, content);

            public void Move(string from, string to)
            {
                if (owner.FailNextMoveTo is { } name && Path.GetFileName(to) == name)
                {
                    owner.FailNextMoveTo = null;
                    throw new IOException($"injected failure renaming {from} to {to}");
                }
                inner.Move(from, to);
            }

            public void Delete(string path) => inner.Delete(path);
            public void CreateDirectory(string path) => inner.CreateDirectory(path);
            public void SyncDirectory() => inner.SyncDirectory();
            public void SyncDirectory(string directory) => inner.SyncDirectory(directory);
            public bool TryLink(string existing, string newName) => owner.HardLinks && inner.TryLink(existing, newName);
            public (long Size, long Available) Space() => inner.Space();
            public long UsedBytes() => inner.UsedBytes();
            public long AllocatedBytes(string path) => inner.AllocatedBytes(path);
            public bool TryReadHeader(string path, out Qcow2Header header) => inner.TryReadHeader(path, out header);
            public string ImageOf(string path) => inner.ImageOf(path);

            public Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForReading(string path) => inner.OpenForReading(path);
            public string BackingNameOf(string uuid, string extension) => inner.BackingNameOf(uuid, extension);
            public string? UuidOfBacking(string backingName, string extension) => inner.UuidOfBacking(backingName, extension);
            public void Dispose() => inner.Dispose();
        }
    }
}
