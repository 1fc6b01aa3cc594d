using System.Buffers.Binary;
using Xapi.Storage.Formats.Vhd;
using static Xapi.Storage.Tests.Formats.VhdTestKit;

namespace Xapi.Storage.Tests.Formats;

/// <summary>
/// Damaged and hostile VHDs are refused with <see cref="VhdFormatException"/> and a message that says
/// what is wrong; the target is untouched when the fault is in the metadata, and never written past its
/// size (the target is exactly the VHD's size, so a write past it would throw something else).
/// </summary>
public class VhdBadInputTests
{
    private const long Size = (8L * MiB) + 1536;

    private VhdTestKit _kit = null!;
    private string _source = null!;
    private byte[] _vhd = null!;
    private string _target = null!;
    private string _targetHash = null!;

    [SetUp]
    public async Task SetUp()
    {
        _kit = new VhdTestKit();
        _source = _kit.Sparse("source", Size);
        WriteAt(_source, 0, Pattern(3 * MiB, 21));
        WriteAt(_source, Size - 1000, Pattern(1000, 22));
        var (path, plan) = await _kit.ExportAsync(_source, "disk.vhd");
        Assert.That(plan.IncludedBlocks, Is.EqualTo(3), "blocks 0, 1 and 4");
        _vhd = await File.ReadAllBytesAsync(path);
        // The target holds something else, so any write shows.
        _target = _kit.Sparse("target", Size);
        WriteAt(_target, 0, Pattern((int)Size, 23));
        _targetHash = Sha256(_target);
    }

    [TearDown]
    public void TearDown() => _kit.Dispose();

    private static int Block(int n) => 2048 + 512 + (n * (512 + (2 * MiB)));

    private VhdFormatException Refused(byte[] vhd, bool sendLength = true, long? claimedLength = null)
    {
        try
        {
            ImportAsync(vhd, _target, sendLength, null, claimedLength).GetAwaiter().GetResult();
        }
        catch (VhdFormatException e)
        {
            return e;
        }
        Assert.Fail("the VHD was imported");
        throw new InvalidOperationException();
    }

    private void AssertTargetUnchanged() => Assert.That(Sha256(_target), Is.EqualTo(_targetHash), "the target was not written");

    [Test]
    public async Task The_valid_vhd_imports()
    {
        await ImportAsync(_vhd, _target);
        Assert.That(Sha256(_target), Is.EqualTo(Sha256(_source)));
    }

    // Points inside each part: footer copy, header, locator sector, BAT, a bitmap, block data, between blocks, the trailing footer.
    [TestCase(0), TestCase(100), TestCase(600), TestCase(1600), TestCase(2100), TestCase(2560 + 100), TestCase(2560 + 512 + 4096)]
    [TestCase(2560 + (2 * (512 + (2 * MiB)))), TestCase(-600), TestCase(-512), TestCase(-1)]
    public void A_truncated_vhd_is_refused_whether_or_not_its_length_is_known(int at)
    {
        var cut = at >= 0 ? at : _vhd.Length + at;
        var truncated = _vhd[..cut];
        var metadataOnly = cut < Block(0) + 512;

        foreach (var (sendLength, claimed) in new (bool, long?)[] { (true, null), (false, null), (true, _vhd.Length) })
        {
            var e = Refused(truncated, sendLength, claimed);
            Assert.That(e.Message, Does.Contain("ends early").Or.Contain("too short").Or.Contain("past the end").Or.Contain("outside the VHD").Or.Contain("not a VHD footer"),
                $"cut at {cut}, length {(sendLength ? claimed ?? cut : null)}: {e.Message}");
            if (metadataOnly)
            {
                AssertTargetUnchanged();
            }
        }
    }

    [Test]
    public void A_vhd_cut_after_its_blocks_is_refused_for_its_missing_footer_and_the_target_keeps_its_other_data()
    {
        var e = Refused(_vhd[..^512], sendLength: false);
        Assert.That(e.Message, Does.Contain("without the footer"));
        // The blocks before the fault were written, as the real server's import does; the unallocated ones were not zeroed.
        var data = File.ReadAllBytes(_target);
        var before = Pattern((int)Size, 23);
        Assert.That(data.AsSpan(4 * MiB, 4 * MiB).SequenceEqual(before.AsSpan(4 * MiB, 4 * MiB)));
    }

    [Test]
    public void A_corrupt_footer_copy_is_refused_before_anything_is_written()
    {
        var bad = (byte[])_vhd.Clone();
        bad[200] ^= 0x01; // a reserved byte: only the checksum notices
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("footer copy at the start").And.Contain("checksum"));
        AssertTargetUnchanged();
    }

    /// <summary>
    /// Without its cookie the start is no footer, which a fixed VHD (data first, footer last) would
    /// also look like; but a dynamic disk header right behind it says the stream is a dynamic VHD
    /// whose footer copy is damaged, so it is refused before its first sector reaches the disk.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void A_dynamic_vhd_whose_footer_cookie_is_damaged_is_refused_before_anything_is_written(bool sendLength)
    {
        var bad = (byte[])_vhd.Clone();
        bad[0] = (byte)'X';
        var e = Refused(bad, sendLength);
        Assert.That(e.Message, Does.Contain("footer copy at the start").And.Contain("cxsparse"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_corrupt_trailing_footer_is_refused()
    {
        var bad = (byte[])_vhd.Clone();
        bad[^100] ^= 0x01;
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("footer at the end").And.Contain("checksum"));
    }

    [Test]
    public void A_trailing_footer_that_disagrees_with_its_copy_is_refused()
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt64BigEndian(bad.AsSpan(bad.Length - 512 + 48), Size - 512);
        SealFooter(bad, bad.Length - 512);
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("does not match"));
    }

    [Test]
    public void A_corrupt_header_is_refused_before_anything_is_written()
    {
        var bad = (byte[])_vhd.Clone();
        bad[512 + 900] ^= 0x40;
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("header is corrupt").And.Contain("checksum"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_block_allocation_table_entry_past_the_end_is_refused_before_anything_is_written()
    {
        var bad = (byte[])_vhd.Clone();
        SetBatEntry(bad, 2, (uint)(bad.Length / 512) + 10);
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("block 2").And.Contain("past the end"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_block_allocation_table_entry_past_the_end_of_a_body_of_unknown_length_is_refused_at_the_end_of_the_stream()
    {
        var bad = (byte[])_vhd.Clone();
        SetBatEntry(bad, 2, (uint)(bad.Length / 512) + 10);
        var e = Refused(bad, sendLength: false);
        Assert.That(e.Message, Does.Contain("ends early").And.Contain("block 2"));
    }

    [Test]
    public void A_block_entry_past_the_stream_end_with_a_huge_claimed_length_is_refused_when_the_stream_ends()
    {
        var bad = (byte[])_vhd.Clone();
        SetBatEntry(bad, 2, uint.MaxValue - 1);
        var e = Refused(bad, claimedLength: 4L << 40);
        Assert.That(e.Message, Does.Contain("ends early"));
    }

    [Test]
    public void Overlapping_blocks_are_refused_before_anything_is_written()
    {
        var bad = (byte[])_vhd.Clone();
        SetBatEntry(bad, 1, BatEntry(bad, 0) + 8);
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("blocks 0 and 1 overlap"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_block_inside_the_header_or_table_is_refused_before_anything_is_written()
    {
        var bad = (byte[])_vhd.Clone();
        SetBatEntry(bad, 0, 1);
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("block 0 at byte 512, inside"));
        AssertTargetUnchanged();
    }

    [Test]
    public async Task A_vhd_larger_than_the_target_is_refused_with_its_sizes_before_anything_is_written()
    {
        var small = _kit.Sparse("small", Size - 512);
        var e = await Assert.ThrowsAsync<VhdTooLargeException>(() => ImportAsync(_vhd, small));
        Assert.Multiple(() =>
        {
            Assert.That(e!.VirtualSize, Is.EqualTo(Size));
            Assert.That(e.TargetSize, Is.EqualTo(Size - 512));
            Assert.That(new FileInfo(small).Length, Is.EqualTo(Size - 512));
            Assert.That(File.ReadAllBytes(small).AsSpan().ContainsAnyExcept((byte)0), Is.False, "nothing was written");
        });
    }

    [Test]
    public void A_table_allocating_a_block_past_the_virtual_size_is_refused()
    {
        var bad = (byte[])_vhd.Clone();
        // 128 entries fit the table's 512 bytes; allocate entry 100, far past the disk's 5 blocks.
        BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(512 + 28), 128);
        SealHeader(bad);
        SetBatEntry(bad, 100, BatEntry(bad, 4));
        SetBatEntry(bad, 4, uint.MaxValue);
        var e = Refused(bad);
        Assert.That(e.Message, Does.Contain("block 100, past the disk's 5 blocks"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_table_too_small_for_the_virtual_size_is_refused()
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(512 + 28), 4);
        SealHeader(bad);
        Assert.That(Refused(bad).Message, Does.Contain("too few"));
        AssertTargetUnchanged();
    }

    [TestCase(0u), TestCase(256u), TestCase(3u * 1024 * 1024), TestCase(0x80000000u)]
    public void A_block_size_that_is_not_a_sane_power_of_two_is_refused(uint blockSize)
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(512 + 32), blockSize);
        SealHeader(bad);
        Assert.That(Refused(bad).Message, Does.Contain("block size"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_table_declaring_millions_of_entries_is_refused_before_it_is_read()
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(512 + 28), 0x7FFF_FFFF);
        SealHeader(bad);
        Assert.That(Refused(bad).Message, Does.Contain("at most"));
    }

    [TestCase(1u), TestCase(5u), TestCase(0xFFFFFFFFu)]
    public void An_unknown_disk_type_is_refused(uint type)
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(60), type);
        SealFooter(bad, 0);
        Assert.That(Refused(bad).Message, Does.Contain("disk type"));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_header_pointing_back_into_the_footer_is_refused()
    {
        var bad = (byte[])_vhd.Clone();
        BinaryPrimitives.WriteUInt64BigEndian(bad.AsSpan(16), 0);
        SealFooter(bad, 0);
        Assert.That(Refused(bad).Message, Does.Contain("outside the VHD"));
        AssertTargetUnchanged();
    }

    [Test]
    public void Data_that_is_no_vhd_at_all_is_refused_for_its_missing_footer()
    {
        var junk = Pattern(MiB, 24);
        Assert.That(Refused(junk).Message, Does.Contain("footer at the end").And.Contain("not a VHD footer"));
    }

    [Test]
    public async Task Data_longer_than_the_target_without_a_vhd_footer_is_refused_by_its_length_before_anything_is_written()
    {
        var junk = Pattern((int)Size + 4096, 25);
        await Assert.ThrowsAsync<VhdTooLargeException>(() => ImportAsync(junk, _target));
        AssertTargetUnchanged();
    }

    [Test]
    public void A_fixed_vhd_whose_footer_disagrees_with_its_data_length_is_refused()
    {
        var fixedVhd = new byte[(4 * MiB) + 512];
        new VhdFooter(VhdDiskType.Fixed, 4 * MiB + 512, ulong.MaxValue, Guid.NewGuid(), 0, VhdFormat.CreatorApp, VhdFormat.Geometry(4 * MiB)).Write(fixedVhd.AsSpan(4 * MiB));
        Assert.That(Refused(fixedVhd).Message, Does.Contain("holds 4194304 bytes of data"));
    }
}
