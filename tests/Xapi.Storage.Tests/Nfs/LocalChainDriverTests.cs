using System.Diagnostics;
using System.Security.Cryptography;
using Xapi.Storage.DataPath;
using Xapi.Storage.Drivers.Ext;

namespace Xapi.Storage.Tests.Nfs;

/// <summary>The chain scenarios on a local directory: the ext driver through the local file store.</summary>
public sealed class LocalChainDriverTests : ChainDriverScenarios
{
    private string _location = "";

    protected override ExtDriver Driver { get; } = new();

    protected override IReadOnlyDictionary<string, string> DeviceConfig => new Dictionary<string, string> { [ExtDriver.LocationKey] = _location };

    [SetUp]
    public void MakeLocation() => _location = Scratch();

    protected override string BackDoor(string srUuid) => Path.Combine(_location, srUuid);

    [Test]
    public async Task A_read_only_open_reads_a_chain_from_its_files_exactly_as_qemu_reads_it_zeroed_and_grown_ranges_included()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(8 * MiB), default);
        var content = RandomNumberGenerator.GetBytes((int)(8 * MiB));
        content.AsSpan((int)(2 * MiB), (int)MiB).Clear();
        await WriteAsync(sr, vdi, content);
        await Driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);
        await using (var writer = await Driver.OpenAsync(sr, vdi, writable: true, default))
        {
            var piece = RandomNumberGenerator.GetBytes((int)MiB);
            await writer.WriteAsync(5 * MiB, piece, default);
            piece.CopyTo(content, 5 * MiB);
            // Zeros over the base's data, and a range that is not cluster-aligned.
            await writer.WriteZeroesAsync(6 * MiB, MiB, default);
            content.AsSpan((int)(6 * MiB), (int)MiB).Clear();
            var odd = RandomNumberGenerator.GetBytes(1000);
            await writer.WriteAsync((7 * MiB) + 123, odd, default);
            odd.CopyTo(content, (int)(7 * MiB) + 123);
            await writer.FlushAsync(default);
        }
        vdi = await Driver.ResizeVdiAsync(sr, vdi, 12 * MiB, default);
        var expected = new byte[12 * MiB];
        content.CopyTo(expected, 0);

        await using var image = await Driver.OpenAsync(sr, vdi, writable: false, default);
        Assert.That(image, Is.InstanceOf<MappedImage>(), "read from the chain's files, with no qemu-nbd started");
        var read = new byte[12 * MiB];
        // Pieces that straddle runs and layers.
        for (var offset = 0; offset < read.Length; offset += 3 * (int)MiB / 2)
        {
            await image.ReadAsync(offset, read.AsMemory(offset, Math.Min(3 * (int)MiB / 2, read.Length - offset)), default);
        }
        Assert.That(Sha(read), Is.EqualTo(Sha(expected)));
        Assert.That(Sha(read), Is.EqualTo(await ReadAsync(sr, vdi)), "what qemu-img reads");
        var zeroExtents = new List<DiskExtent>();
        await foreach (var extent in image.MapAsync(0, image.Size, default))
        {
            if (extent.Zero)
            {
                zeroExtents.Add(extent);
                Assert.That(expected.AsSpan((int)extent.Offset, (int)extent.Length).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), $"{extent} is mapped as zeros");
            }
        }
        Assert.That(zeroExtents.Sum(e => e.Length), Is.GreaterThanOrEqualTo(4 * MiB), "the grown range and the zeroed one are holes");
    }

    [Test]
    public async Task A_chain_with_compressed_clusters_is_read_through_qemu_with_the_same_bytes()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(4 * MiB), default);
        var content = new byte[4 * MiB];
        RandomNumberGenerator.Fill(content.AsSpan(0, (int)MiB));
        await WriteAsync(sr, vdi, content);
        // A compressed cluster has no plain file offset to read: only qemu can decode it.
        content.AsSpan((int)(2 * MiB), 65536).Fill(7);
        using (var qemuIo = Process.Start("qemu-io", ["-f", "qcow2", "-c", $"write -c -P 7 {2 * MiB} 65536", Path.Combine(BackDoor(sr.Uuid), vdi.Uuid + ".qcow2")]))
        {
            await qemuIo.WaitForExitAsync();
            Assert.That(qemuIo.ExitCode, Is.Zero);
        }

        await using var image = await Driver.OpenAsync(sr, vdi, writable: false, default);
        Assert.That(image, Is.Not.InstanceOf<MappedImage>());
        var read = new byte[4 * MiB];
        await image.ReadAsync(0, read, default);
        Assert.That(Sha(read), Is.EqualTo(Sha(content)));
    }
}
