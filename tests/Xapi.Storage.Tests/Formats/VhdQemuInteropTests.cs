using Xapi.Storage.Formats.Vhd;
using static Xapi.Storage.Tests.Formats.VhdTestKit;

namespace Xapi.Storage.Tests.Formats;

/// <summary>Our VHDs against qemu-img 7.2's vpc driver, both ways (qemu-utils is installed by scripts/test.sh).</summary>
public class VhdQemuInteropTests
{
    private VhdTestKit _kit = null!;

    [SetUp]
    public void SetUp() => _kit = new VhdTestKit();

    [TearDown]
    public void TearDown() => _kit.Dispose();

    private string DiskWithData(string name, long size)
    {
        var path = _kit.Sparse(name, size);
        WriteAt(path, 512, Pattern(3 * MiB, 11));
        WriteAt(path, 20 * MiB, Pattern(4096, 12));
        WriteAt(path, size - 4096, Pattern(4096, 13));
        return path;
    }

    // 64 MiB is no whole number of CHS cylinders; neither are the odd sizes.
    [TestCase(64L * MiB, TestName = "qemu-img reads our VHD export of a 64 MiB disk back at its exact size and byte-identical")]
    [TestCase((30L * MiB) + 1536, TestName = "qemu-img reads our VHD export of a disk ending inside a block back at its exact size and byte-identical")]
    [TestCase((100L * MiB) + 7168, TestName = "qemu-img reads our VHD export of a 100 MiB and 7 KiB disk back at its exact size and byte-identical")]
    public async Task Qemu_reads_our_export(long size)
    {
        var source = DiskWithData("source", size);
        var (vhd, _) = await _kit.ExportAsync(source, "disk.vhd");
        var raw = _kit.PathOf("out.raw");

        Qemu("convert", "-f", "vpc", "-O", "raw", vhd, raw);

        Assert.Multiple(() =>
        {
            Assert.That(QemuVirtualSize(vhd), Is.EqualTo(size));
            Assert.That(new FileInfo(raw).Length, Is.EqualTo(size));
            Assert.That(Sha256(raw), Is.EqualTo(Sha256(source)));
        });
    }

    [Test]
    public async Task Qemu_reads_our_differencing_export_as_a_vhd()
    {
        // qemu's vpc driver does not follow parents; it must still accept the file and see the included blocks.
        var size = 8L * MiB;
        var child = DiskWithData("child", size);
        var (vhd, _) = await _kit.ExportAsync(child, "delta.vhd",
            new VhdExportOptions { Parent = new VhdParent(Guid.NewGuid(), DateTimeOffset.UtcNow, "base.vhd") },
            [new Xapi.Storage.DataPath.DiskExtent(0, size, false)]);
        var (code, output) = Run("qemu-img", "info", vhd);
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("file format: vpc"));
    }

    [TestCase(true, TestName = "A dynamic VHD qemu-img writes with force_size imports byte-identical")]
    [TestCase(false, TestName = "A dynamic VHD qemu-img writes with force_size imports byte-identical from a body of unknown length")]
    public async Task Qemu_dynamic_force_size(bool sendLength)
    {
        var size = (30L * MiB) + 1536;
        var source = DiskWithData("source", size);
        var vhd = _kit.PathOf("qemu.vhd");
        Qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", source, vhd);
        var target = _kit.Sparse("target", size);

        var result = await ImportFileAsync(vhd, target, sendLength);

        Assert.Multiple(() =>
        {
            Assert.That(result.DiskType, Is.EqualTo(VhdDiskType.Dynamic));
            Assert.That(result.VirtualSize, Is.EqualTo(size));
            Assert.That(Sha256(target), Is.EqualTo(Sha256(source)));
        });
    }

    [TestCase(true, TestName = "A fixed VHD qemu-img writes imports byte-identical")]
    [TestCase(false, TestName = "A fixed VHD qemu-img writes imports byte-identical from a body of unknown length")]
    public async Task Qemu_fixed(bool sendLength)
    {
        var size = (30L * MiB) + 1536;
        var source = DiskWithData("source", size);
        var vhd = _kit.PathOf("qemu.vhd");
        Qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", source, vhd);
        var target = _kit.Sparse("target", size);
        var garbage = new byte[4 * MiB];
        Array.Fill(garbage, (byte)0x77);
        WriteAt(target, 8 * MiB, garbage);

        var result = await ImportFileAsync(vhd, target, sendLength);

        Assert.Multiple(() =>
        {
            Assert.That(result.DiskType, Is.EqualTo(VhdDiskType.Fixed));
            Assert.That(result.VirtualSize, Is.EqualTo(size));
            Assert.That(Sha256(target), Is.EqualTo(Sha256(source)), "the zeros of the fixed disk overwrite what the target held");
        });
    }

    [Test]
    public async Task A_vhd_qemu_rounds_up_to_its_geometry_is_refused_by_a_disk_of_the_original_size_and_fits_a_larger_one()
    {
        var size = 64L * MiB;
        var source = DiskWithData("source", size);
        var vhd = _kit.PathOf("qemu.vhd");
        Qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", source, vhd);
        var rounded = QemuVirtualSize(vhd);
        Assert.That(rounded, Is.GreaterThan(size), "qemu without force_size rounds up to whole cylinders");

        var exact = _kit.Sparse("exact", size);
        var hashBefore = Sha256(exact);
        var refused = await Assert.ThrowsAsync<VhdTooLargeException>(() => ImportFileAsync(vhd, exact));
        Assert.That(refused!.VirtualSize, Is.EqualTo(rounded));
        Assert.That(Sha256(exact), Is.EqualTo(hashBefore), "nothing was written");

        var larger = _kit.Sparse("larger", rounded);
        await ImportFileAsync(vhd, larger);
        await using var image = Open(larger);
        var head = new byte[size];
        await image.ReadAsync(0, head, CancellationToken.None);
        Assert.That(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(head)), Is.EqualTo(Sha256(source)));
    }
}
