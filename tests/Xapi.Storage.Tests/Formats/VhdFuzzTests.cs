using Xapi.Storage.DataPath;
using Xapi.Storage.Formats.Vhd;
using Xapi.Tests.Fuzzing;
using static Xapi.Storage.Tests.Formats.VhdTestKit;

namespace Xapi.Storage.Tests.Formats;

/// <summary>
/// Damaged VHDs (small blocks, so that most mutations land in metadata and bitmaps) against the
/// importer: each either imports or is refused with <see cref="VhdFormatException"/>, within a time
/// limit, and never writes past the target (a write past its size throws from the image, which the
/// fuzz loop reports as a crash).
/// </summary>
public class VhdFuzzTests
{
    private static readonly TimeSpan PerInput = TimeSpan.FromSeconds(10);

    private VhdTestKit _kit = null!;

    [SetUp]
    public void SetUp() => _kit = new VhdTestKit();

    [TearDown]
    public void TearDown() => _kit.Dispose();

    private async Task<byte[][]> SeedsAsync()
    {
        var seeds = new List<byte[]>();
        foreach (var (size, blockSize) in new[] { (64L * 1024, 4096), ((48L * 1024) + 1536, 8192), (20L * 1024, 512) })
        {
            var source = _kit.Sparse($"source-{size}-{blockSize}", size);
            WriteAt(source, 0, Pattern(5000, 31));
            WriteAt(source, size / 2, Pattern(3000, 32));
            WriteAt(source, size - 700, Pattern(700, 33));
            var (path, _) = await _kit.ExportAsync(source, $"seed-{size}-{blockSize}.vhd", new VhdExportOptions { BlockSize = blockSize });
            seeds.Add(await File.ReadAllBytesAsync(path));
            var (delta, _) = await _kit.ExportAsync(source, $"delta-{size}-{blockSize}.vhd",
                new VhdExportOptions { BlockSize = blockSize, Parent = new VhdParent(Guid.NewGuid(), DateTimeOffset.UnixEpoch, "parent.vhd") },
                [new DiskExtent(0, 6000, false), new DiskExtent(size - 800, 800, true)]);
            seeds.Add(await File.ReadAllBytesAsync(delta));
        }
        return [.. seeds];
    }

    /// <summary>The header cookies and typical field values, for the fuzzer to splice in.</summary>
    private static readonly byte[][] Tokens =
    [
        "conectix"u8.ToArray(), "cxsparse"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0, 0, 2, 0], [0, 1, 0, 0],
        [0, 0, 0, 3], [0, 0, 0, 4], [0, 0, 0, 2], [0x7F, 0xFF, 0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    ];

    private byte[] Generate(Random random, byte[][] seeds)
    {
        var seed = Fuzzer.Pick(random, seeds);
        if (random.Next(4) == 0)
        {
            return Fuzzer.Mutate(random, seed, Tokens);
        }
        // Damage the metadata (footer copy, header, locator, table) and keep the blocks, or damage a block's bitmap region.
        var split = random.Next(3) == 0 ? random.Next(seed.Length) : Math.Min(seed.Length, 2048 + 512);
        var head = Fuzzer.Mutate(random, seed[..split], Tokens);
        return [.. head, .. seed[split..]];
    }

    private void Decode(byte[] input, string target, bool sendLength)
    {
        var import = Task.Run(() => ImportAsync(input, target, sendLength));
        if (!import.Wait(PerInput))
        {
            Assert.Fail($"the import of a {input.Length}-byte input did not finish in {PerInput.TotalSeconds} s: {Convert.ToBase64String(input, 0, Math.Min(4096, input.Length))}");
        }
    }

    private static bool Documented(Exception e) => (e is AggregateException a ? a.InnerException : e) is VhdFormatException;

    [Test]
    public async Task The_importer_imports_or_refuses_five_hundred_damaged_vhds_of_a_fixed_seed()
    {
        var seeds = await SeedsAsync();
        var target = _kit.Sparse("target", 64L * 1024);
        var random = new Random(20240917);
        var accepted = 0;
        var refused = 0;
        for (var n = 0; n < 500; n++)
        {
            var input = Generate(random, seeds);
            try
            {
                Decode(input, target, sendLength: n % 2 == 0);
                accepted++;
            }
            catch (Exception e) when (Documented(e))
            {
                refused++;
            }
        }
        TestContext.Out.WriteLine($"{accepted} accepted, {refused} refused");
        Assert.That(accepted, Is.GreaterThan(25), "some damage is harmless (data bytes)");
        Assert.That(refused, Is.GreaterThan(250), "most damage to metadata is caught");
        Assert.That(new FileInfo(target).Length, Is.EqualTo(64L * 1024), "the target did not grow");
    }

    [Test]
    [Category("Fuzz")]
    [Category("Slow")]
    [Explicit("30 s: run by scripts/test.sh, or with --filter TestCategory=Slow")]
    public async Task The_importer_imports_or_refuses_every_damaged_vhd()
    {
        var seeds = await SeedsAsync();
        var target = _kit.Sparse("target", 64L * 1024);
        var n = 0;
        Fuzzer.Run("vhd-import", TimeSpan.FromSeconds(30), random => Generate(random, seeds), input => Decode(input, target, sendLength: n++ % 2 == 0),
            e => Documented(e));
        Assert.That(new FileInfo(target).Length, Is.EqualTo(64L * 1024), "the target did not grow");
    }
}
