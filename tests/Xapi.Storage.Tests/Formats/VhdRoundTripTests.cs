using System.Buffers.Binary;
using System.Text;
using Xapi.Storage.DataPath;
using Xapi.Storage.Formats.Vhd;
using static Xapi.Storage.Tests.Formats.VhdTestKit;

namespace Xapi.Storage.Tests.Formats;

/// <summary>Our VHD writer and reader against each other: data checked by checksum, layout checked field by field.</summary>
public class VhdRoundTripTests
{
    private VhdTestKit _kit = null!;

    [SetUp]
    public void SetUp() => _kit = new VhdTestKit();

    [TearDown]
    public void TearDown() => _kit.Dispose();

    /// <summary>A thin disk with data at its start, across a block boundary, in its last partial sector, and one block written with zeros.</summary>
    private string ThinDisk(string name, long size)
    {
        var path = _kit.Sparse(name, size);
        WriteAt(path, 0, Pattern(4096, 1));
        WriteAt(path, (2 * MiB) - 1000, Pattern(5000, 2));
        WriteAt(path, 6 * MiB, new byte[2 * MiB]);
        WriteAt(path, size - 300, Pattern(300, 3));
        return path;
    }

    [TestCase(12L * MiB, TestName = "A thin disk of whole blocks reads back identical after a VHD export and import")]
    [TestCase((10L * MiB) + 1536, TestName = "A thin disk ending inside a block reads back identical after a VHD export and import")]
    [TestCase((8L * MiB) + 300, TestName = "A thin disk whose size is not a whole number of sectors reads back identical after a VHD export and import")]
    public async Task Round_trip(long size)
    {
        var source = ThinDisk("source", size);
        var (vhd, plan) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", size);

        var result = await ImportFileAsync(vhd, target, sendLength: true);

        Assert.Multiple(() =>
        {
            Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
            Assert.That(result.VirtualSize, Is.EqualTo(size));
            Assert.That(result.DiskType, Is.EqualTo(VhdDiskType.Dynamic));
            Assert.That(result.AllocatedBlocks, Is.EqualTo(plan.IncludedBlocks));
        });
    }

    [Test]
    public async Task An_import_without_a_known_length_reads_the_same_data()
    {
        var source = ThinDisk("source", (10L * MiB) + 1536);
        var (vhd, _) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", (10L * MiB) + 1536);

        await ImportFileAsync(vhd, target, sendLength: false);

        Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
    }

    [Test]
    public async Task A_sparse_export_carries_only_blocks_holding_nonzero_data_in_the_layout_vhd_tool_writes()
    {
        var size = (10L * MiB) + 1536;
        var source = ThinDisk("source", size);
        var id = Guid.NewGuid();
        var (path, plan) = await _kit.ExportAsync(source, "disk.vhd", new VhdExportOptions { UniqueId = id, Timestamp = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero) });
        var vhd = await File.ReadAllBytesAsync(path);

        // Blocks 0 and 1 (data across their boundary) and 5 (the last, partial) hold data; block 3 was written with zeros.
        const int blocks = 6;
        Assert.That(plan.IncludedBlocks, Is.EqualTo(3));
        Assert.That(vhd, Has.Length.EqualTo(2048 + 512 + (3 * (512 + (2 * MiB))) + 512));
        var footer = vhd[..512];
        var header = vhd[512..1536];
        Assert.Multiple(() =>
        {
            Assert.That(Encoding.ASCII.GetString(footer, 0, 8), Is.EqualTo("conectix"));
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(8)), Is.EqualTo(2), "features: the reserved bit");
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(footer.AsSpan(16)), Is.EqualTo(512), "the header follows the footer copy");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(24)), Is.EqualTo(757_382_400), "seconds from 2000 to 2024");
            Assert.That(Encoding.ASCII.GetString(footer, 28, 4), Is.EqualTo("tap\0"));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(footer.AsSpan(40)), Is.EqualTo(size), "original size");
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(footer.AsSpan(48)), Is.EqualTo(size), "current size: exact, not rounded to blocks or geometry");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(60)), Is.EqualTo(3), "dynamic");
            Assert.That(new Guid(footer.AsSpan(68, 16), bigEndian: true), Is.EqualTo(id));
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(64)), Is.EqualTo(VhdFormat.Checksum(footer, 64)));
            Assert.That(vhd.AsSpan(vhd.Length - 512).SequenceEqual(footer), "the trailing footer equals the copy");
            Assert.That(Encoding.ASCII.GetString(header, 0, 8), Is.EqualTo("cxsparse"));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8)), Is.EqualTo(ulong.MaxValue));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(16)), Is.EqualTo(2048), "the BAT where vhd-tool puts it");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(28)), Is.EqualTo(blocks));
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(32)), Is.EqualTo(2 * MiB));
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(36)), Is.EqualTo(VhdFormat.Checksum(header, 36)));
            uint[] bat = [.. Enumerable.Range(0, blocks).Select(b => BatEntry(vhd, b))];
            uint first = (2048 + 512) / 512;
            uint step = (512 + (2 * MiB)) / 512;
            Assert.That(bat, Is.EqualTo(new[] { first, first + step, uint.MaxValue, uint.MaxValue, uint.MaxValue, first + (2 * step) }));
            Assert.That(vhd.AsSpan(2048 + 24, 512 - 24).ContainsAnyExcept((byte)0xFF), Is.False, "the BAT is padded with unallocated entries");
            Assert.That(vhd.AsSpan(2560, 512).ContainsAnyExcept((byte)0xFF), Is.False, "a full block's bitmap marks every sector");
        });
        // The last block holds 1536 bytes of the disk: exactly its 3 sectors are marked, so vhd-tool's import writes nothing past the VDI's end.
        var lastBitmap = vhd.AsSpan(2560 + (2 * (int)(512 + (2 * MiB))), 512);
        Assert.That(lastBitmap[0], Is.EqualTo(0b1110_0000));
        Assert.That(lastBitmap[1..].ContainsAnyExcept((byte)0), Is.False);
    }

    [Test]
    public void The_geometry_follows_the_specification()
    {
        Assert.Multiple(() =>
        {
            // 64 MiB: 131072 sectors → 17 sectors/track, 8 heads, 963 cylinders (as qemu and Hyper-V compute).
            Assert.That(VhdFormat.Geometry(64L * MiB), Is.EqualTo((963u << 16) | (8u << 8) | 17u));
            // Past 65535×16×255 sectors the geometry is capped.
            Assert.That(VhdFormat.Geometry(VhdFormat.MaxVirtualSize), Is.EqualTo((65535u << 16) | (16u << 8) | 255u));
            // 4 GiB: 63 sectors/track, 16 heads; 64 GiB: 255 sectors/track.
            Assert.That(VhdFormat.Geometry(4L << 30), Is.EqualTo((8322u << 16) | (16u << 8) | 63u));
            Assert.That(VhdFormat.Geometry(64L << 30), Is.EqualTo((32896u << 16) | (16u << 8) | 255u));
        });
    }

    [Test]
    public async Task Importing_a_dynamic_vhd_over_a_used_disk_makes_it_read_exactly_as_the_vhd()
    {
        var size = 10L * MiB;
        var source = ThinDisk("source", size);
        var (vhd, _) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", size);
        var garbage = new byte[size];
        Array.Fill(garbage, (byte)0xAA);
        WriteAt(target, 0, garbage);

        await ImportFileAsync(vhd, target);

        Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
    }

    [Test]
    public async Task Importing_without_zeroing_leaves_what_the_vhd_does_not_allocate_as_the_real_server_does()
    {
        var size = 10L * MiB;
        var source = ThinDisk("source", size);
        var (vhd, _) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", size);
        var garbage = new byte[size];
        Array.Fill(garbage, (byte)0xAA);
        WriteAt(target, 0, garbage);

        await ImportFileAsync(vhd, target, options: new VhdImportOptions { ZeroUnallocated = false });

        var result = await File.ReadAllBytesAsync(target);
        var expected = await File.ReadAllBytesAsync(source);
        Assert.Multiple(() =>
        {
            Assert.That(result.AsSpan(0, 4 * MiB).SequenceEqual(expected.AsSpan(0, 4 * MiB)), "blocks 0 and 1 are the VHD's");
            Assert.That(result.AsSpan(4 * MiB, 4 * MiB).ContainsAnyExcept((byte)0xAA), Is.False, "blocks 2 and 3 are left alone");
            Assert.That(result.AsSpan(8 * MiB).SequenceEqual(expected.AsSpan(8 * MiB)), "block 4, the last, is the VHD's");
        });
    }

    [Test]
    public async Task Importing_into_a_fresh_thin_disk_keeps_it_thin()
    {
        var size = 64L * MiB;
        var source = _kit.Sparse("source", size);
        WriteAt(source, 40 * MiB, Pattern(MiB, 4));
        var (vhd, _) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", size);

        await ImportFileAsync(vhd, target);

        await using var image = Open(target);
        var data = 0L;
        await foreach (var extent in image.MapAsync(0, size, CancellationToken.None))
        {
            data += extent.Zero ? 0 : extent.Length;
        }
        Assert.That(data, Is.LessThanOrEqualTo(2 * MiB), "only the block with data was written");
        Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
    }

    [Test]
    public async Task A_differencing_export_applied_to_a_copy_of_its_base_gives_the_disk()
    {
        var size = 8L * MiB;
        var basePath = _kit.Sparse("base", size);
        WriteAt(basePath, 0, Pattern(8 * MiB, 5));
        var child = _kit.PathOf("child");
        File.Copy(basePath, child);
        WriteAt(child, (2 * MiB) + 4096, Pattern(8192, 6)); // block 1 changed a little
        WriteAt(child, 4 * MiB, new byte[2 * MiB]);           // block 2 reset to zeros
        DiskExtent[] changed = [new((2 * MiB) + 4096, 8192, false), new(4 * MiB, 2 * MiB, true)];
        var parent = new VhdParent(Guid.NewGuid(), new DateTimeOffset(2024, 5, 1, 12, 0, 0, TimeSpan.Zero), "base.vhd");

        var (path, plan) = await _kit.ExportAsync(child, "delta.vhd", new VhdExportOptions { Parent = parent }, changed);
        var vhd = await File.ReadAllBytesAsync(path);
        var copy = _kit.PathOf("copy");
        File.Copy(basePath, copy);
        var result = await ImportFileAsync(path, copy);

        Assert.Multiple(() =>
        {
            Assert.That(plan.IncludedBlocks, Is.EqualTo(2), "the changed block and the zeroed one");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(vhd.AsSpan(60)), Is.EqualTo(4), "differencing");
            Assert.That(new Guid(vhd.AsSpan(512 + 40, 16), bigEndian: true), Is.EqualTo(parent.UniqueId));
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(vhd.AsSpan(512 + 56)), Is.EqualTo(VhdFormat.Timestamp(parent.Timestamp)));
            Assert.That(Encoding.BigEndianUnicode.GetString(vhd, 512 + 64, 16), Is.EqualTo("base.vhd"));
            Assert.That(Encoding.ASCII.GetString(vhd, 512 + 576, 4), Is.EqualTo("MacX"));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(vhd.AsSpan(512 + 576 + 16)), Is.EqualTo(1536));
            Assert.That(Encoding.UTF8.GetString(vhd, 1536, 15), Is.EqualTo("file://base.vhd"));
            Assert.That(result.ParentUniqueId, Is.EqualTo(parent.UniqueId));
            Assert.That(Sha256(copy), Is.EqualTo(Sha256(child)));
        });
    }

    [Test]
    public async Task Progress_counts_up_to_the_planned_length_and_cancellation_stops_an_export()
    {
        var source = _kit.Sparse("source", 16L * MiB);
        WriteAt(source, 0, Pattern(16 * MiB, 7));
        await using var image = Open(source);
        var plan = await VhdExport.PlanAsync(image, image.MapAsync(0, image.Size, CancellationToken.None), null, CancellationToken.None);
        var seen = new List<(long Done, long Total)>();
        await plan.WriteToAsync(Stream.Null, (done, total) => seen.Add((done, total)), CancellationToken.None);

        Assert.That(seen, Has.Count.GreaterThan(8));
        Assert.That(seen.Select(p => p.Done), Is.Ordered.Ascending);
        Assert.That(seen[^1], Is.EqualTo((plan.Length, plan.Length)));

        using var cancel = new CancellationTokenSource();
        var output = new MemoryStream();
        Assert.That(async () => await plan.WriteToAsync(output, (done, _) =>
        {
            if (done > 4 * MiB)
            {
                cancel.Cancel();
            }
        }, cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(output.Length, Is.LessThan(plan.Length / 2));
    }

    [Test]
    public async Task Progress_and_cancellation_of_an_import()
    {
        var source = _kit.Sparse("source", 16L * MiB);
        WriteAt(source, 0, Pattern(16 * MiB, 8));
        var (path, plan) = await _kit.ExportAsync(source, "disk.vhd");
        var target = _kit.Sparse("target", 16L * MiB);
        await using var image = Open(target, writable: true);

        var seen = new List<(long Done, long Total)>();
        await using (var file = File.OpenRead(path))
        {
            await VhdImport.ImportAsync(new ForwardOnlyStream(file), plan.Length, image, null, (done, total) => seen.Add((done, total)), CancellationToken.None);
        }
        Assert.That(seen.Select(p => p.Done), Is.Ordered.Ascending);
        Assert.That(seen[^1], Is.EqualTo((plan.Length, plan.Length)));

        using var cancel = new CancellationTokenSource();
        await using var again = File.OpenRead(path);
        Assert.That(async () => await VhdImport.ImportAsync(new ForwardOnlyStream(again), null, image, null, (done, total) =>
        {
            Assert.That(total, Is.EqualTo(-1), "no length was given");
            if (done > 4 * MiB)
            {
                cancel.Cancel();
            }
        }, cancel.Token), Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public async Task A_disk_at_the_size_limit_exports_and_imports_and_one_sector_more_is_refused()
    {
        var source = _kit.Sparse("source", VhdFormat.MaxVirtualSize);
        WriteAt(source, VhdFormat.MaxVirtualSize - 4096, Pattern(4096, 9));
        var (path, plan) = await _kit.ExportAsync(source, "disk.vhd");
        Assert.That(plan.Length, Is.EqualTo(2048 + (1_044_480 * 4) + 512 + (2 * MiB) + 512), "the 4 MiB BAT of 2040 GiB and one block");

        var target = _kit.Sparse("target", VhdFormat.MaxVirtualSize);
        await ImportFileAsync(path, target);
        await using (var image = Open(target))
        {
            var tail = new byte[4096];
            await image.ReadAsync(VhdFormat.MaxVirtualSize - 4096, tail, CancellationToken.None);
            Assert.That(tail, Is.EqualTo(Pattern(4096, 9)));
        }

        var tooBig = _kit.Sparse("too-big", VhdFormat.MaxVirtualSize + 512);
        await using var big = Open(tooBig);
        Assert.That(async () => await VhdExport.PlanAsync(big, big.MapAsync(0, big.Size, CancellationToken.None), null, CancellationToken.None),
            Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public async Task Exporting_and_importing_a_disk_holds_memory_to_a_few_blocks()
    {
        var size = 256L * MiB;
        var source = _kit.Sparse("source", size);
        var chunk = Pattern(16 * MiB, 10);
        for (var at = 0L; at < size; at += chunk.Length)
        {
            WriteAt(source, at, chunk);
        }
        var target = _kit.Sparse("target", size);
        var path = _kit.PathOf("disk.vhd");

        var before = GC.GetTotalAllocatedBytes(precise: true);
        await using (var image = Open(source))
        await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1, useAsync: false))
        {
            await VhdExport.ExportAsync(image, image.MapAsync(0, size, CancellationToken.None), new ForwardOnlyStream(file), null, null, CancellationToken.None);
        }
        await ImportFileAsync(path, target);
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        // Budget: 32 MiB allocated for 256 MiB exported and imported again (pooled 2 MiB buffers, no per-block arrays).
        Assert.That(allocated, Is.LessThan(32L * MiB), $"{allocated} bytes allocated");
        Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
    }
}
