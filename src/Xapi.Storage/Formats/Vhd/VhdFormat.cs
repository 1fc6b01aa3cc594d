using System.Buffers.Binary;
using System.Text;

namespace Xapi.Storage.Formats.Vhd;

/// <summary>The VHD disk types (Microsoft VHD specification v1.0, "Disk Type").</summary>
public enum VhdDiskType
{
    Fixed = 2,
    Dynamic = 3,
    Differencing = 4,
}

/// <summary>Sizes and limits of the VHD format as this daemon writes and reads it.</summary>
public static class VhdFormat
{
    public const int SectorSize = 512;

    /// <summary>The block size of every VHD this daemon writes: the spec's default, and the only one vhd-tool writes.</summary>
    public const int DefaultBlockSize = 2 * 1024 * 1024;

    /// <summary>
    /// The largest virtual size the real server exports as VHD (2040 GiB, vhd_format's max_disk_size):
    /// with 2 MiB blocks the last block's sector number still fits the BAT's 32 bits. Callers check it
    /// before exporting and refuse a larger disk with the error the real server gives.
    /// </summary>
    public const long MaxVirtualSize = 2_190_433_320_960;

    /// <summary>
    /// The most BAT entries a VHD may declare for the importer (8 MiB of table): 4 TiB in 2 MiB blocks.
    /// A header declaring more is refused before the table is read, so a hostile header cannot make
    /// the importer allocate gigabytes.
    /// </summary>
    public const int MaxTableEntries = 1 << 21;

    internal const int FooterSize = 512;
    internal const int HeaderSize = 1024;
    internal const uint Version = 0x0001_0000;
    internal const ulong NoDataOffset = ulong.MaxValue;
    internal const uint Unallocated = uint.MaxValue;

    /// <summary>VHD timestamps count seconds from here.</summary>
    internal static readonly DateTimeOffset Epoch = new(2000, 1, 1, 0, 0, 0, TimeSpan.Zero);

    internal static ReadOnlySpan<byte> FooterCookie => "conectix"u8;
    internal static ReadOnlySpan<byte> HeaderCookie => "cxsparse"u8;

    /// <summary>The platform code of a locator holding a UTF-8 <c>file://</c> URL (the one xen-api writes).</summary>
    internal const uint PlatformMacX = 0x4D61_6358;

    /// <summary>
    /// "tap\0", the creator of XenServer's blktap: qemu's vpc driver takes the virtual size from the
    /// footer's current size for this creator instead of from the CHS geometry (which rounds most sizes
    /// down), so <c>qemu-img convert -f vpc</c> reads our exports back at exactly their size.
    /// xen-api's own "caml" is not on qemu's list.
    /// </summary>
    internal const uint CreatorApp = 0x7461_7000;
    internal const uint CreatorVersion = 0x0001_0000;
    /// <summary>"Wi2k": the spec defines only Windows and Macintosh hosts.</summary>
    internal const uint CreatorHostOs = 0x5769_326B;

    /// <summary>Bytes of a block's sector bitmap: one bit a sector, padded to whole sectors.</summary>
    internal static int BitmapSize(long blockSize) => (int)RoundUp((blockSize / SectorSize + 7) / 8, SectorSize);

    internal static long RoundUp(long value, long multiple) => (value + multiple - 1) / multiple * multiple;

    internal static long CeilDiv(long value, long divisor) => (value + divisor - 1) / divisor;

    /// <summary>One's complement of the byte sum of <paramref name="data"/>, counting the checksum field as zero.</summary>
    internal static uint Checksum(ReadOnlySpan<byte> data, int checksumOffset)
    {
        uint sum = 0;
        for (var i = 0; i < data.Length; i++)
        {
            sum += data[i];
        }
        for (var i = checksumOffset; i < checksumOffset + 4; i++)
        {
            sum -= data[i];
        }
        return ~sum;
    }

    /// <summary>The spec's CHS algorithm (appendix "CHS Calculation"): cylinders, heads, sectors per track packed as in the footer.</summary>
    internal static uint Geometry(long currentSize)
    {
        var totalSectors = Math.Min(currentSize / SectorSize, 65535L * 16 * 255);
        long sectorsPerTrack;
        long heads;
        long cylinderTimesHeads;
        if (totalSectors >= 65535L * 16 * 63)
        {
            sectorsPerTrack = 255;
            heads = 16;
            cylinderTimesHeads = totalSectors / sectorsPerTrack;
        }
        else
        {
            sectorsPerTrack = 17;
            cylinderTimesHeads = totalSectors / sectorsPerTrack;
            heads = Math.Max(4, (cylinderTimesHeads + 1023) / 1024);
            if (cylinderTimesHeads >= heads * 1024 || heads > 16)
            {
                sectorsPerTrack = 31;
                heads = 16;
                cylinderTimesHeads = totalSectors / sectorsPerTrack;
            }
            if (cylinderTimesHeads >= heads * 1024)
            {
                sectorsPerTrack = 63;
                heads = 16;
                cylinderTimesHeads = totalSectors / sectorsPerTrack;
            }
        }
        var cylinders = cylinderTimesHeads / heads;
        return (uint)((cylinders << 16) | (heads << 8) | sectorsPerTrack);
    }

    internal static uint Timestamp(DateTimeOffset time)
    {
        var seconds = (long)(time - Epoch).TotalSeconds;
        return (uint)Math.Clamp(seconds, 0, uint.MaxValue);
    }
}

/// <summary>The 512-byte footer (at the end of every VHD, and copied at offset 0 of dynamic and differencing ones).</summary>
internal sealed record VhdFooter(
    VhdDiskType DiskType,
    long CurrentSize,
    ulong DataOffset,
    Guid UniqueId,
    uint Timestamp,
    uint CreatorApp,
    uint Geometry)
{
    private const int ChecksumOffset = 64;

    public void Write(Span<byte> sector)
    {
        sector[..VhdFormat.FooterSize].Clear();
        VhdFormat.FooterCookie.CopyTo(sector);
        // Features: bit 1 is "reserved, must always be set".
        BinaryPrimitives.WriteUInt32BigEndian(sector[8..], 2);
        BinaryPrimitives.WriteUInt32BigEndian(sector[12..], VhdFormat.Version);
        BinaryPrimitives.WriteUInt64BigEndian(sector[16..], DataOffset);
        BinaryPrimitives.WriteUInt32BigEndian(sector[24..], Timestamp);
        BinaryPrimitives.WriteUInt32BigEndian(sector[28..], CreatorApp);
        BinaryPrimitives.WriteUInt32BigEndian(sector[32..], VhdFormat.CreatorVersion);
        BinaryPrimitives.WriteUInt32BigEndian(sector[36..], VhdFormat.CreatorHostOs);
        BinaryPrimitives.WriteUInt64BigEndian(sector[40..], (ulong)CurrentSize);
        BinaryPrimitives.WriteUInt64BigEndian(sector[48..], (ulong)CurrentSize);
        BinaryPrimitives.WriteUInt32BigEndian(sector[56..], Geometry);
        BinaryPrimitives.WriteUInt32BigEndian(sector[60..], (uint)DiskType);
        UniqueId.TryWriteBytes(sector[68..84], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32BigEndian(sector[ChecksumOffset..], VhdFormat.Checksum(sector[..VhdFormat.FooterSize], ChecksumOffset));
    }

    public static bool HasCookie(ReadOnlySpan<byte> sector) => sector.StartsWith(VhdFormat.FooterCookie);

    /// <summary>Parses and checks a footer; <paramref name="where"/> names it in the error ("the footer at the end").</summary>
    public static VhdFooter Parse(ReadOnlySpan<byte> sector, string where)
    {
        if (!HasCookie(sector))
        {
            throw new VhdFormatException($"{where} is not a VHD footer (no \"conectix\" cookie)");
        }
        var stored = BinaryPrimitives.ReadUInt32BigEndian(sector[ChecksumOffset..]);
        var computed = VhdFormat.Checksum(sector[..VhdFormat.FooterSize], ChecksumOffset);
        if (stored != computed)
        {
            throw new VhdFormatException($"{where} is corrupt: its checksum is 0x{stored:X8}, its contents sum to 0x{computed:X8}");
        }
        var version = BinaryPrimitives.ReadUInt32BigEndian(sector[12..]);
        if (version != VhdFormat.Version)
        {
            throw new VhdFormatException($"{where} has format version 0x{version:X8}; only 0x00010000 is defined");
        }
        var type = BinaryPrimitives.ReadUInt32BigEndian(sector[60..]);
        if (type is not ((uint)VhdDiskType.Fixed or (uint)VhdDiskType.Dynamic or (uint)VhdDiskType.Differencing))
        {
            throw new VhdFormatException($"{where} has disk type {type}; only fixed (2), dynamic (3) and differencing (4) disks can be imported");
        }
        var currentSize = BinaryPrimitives.ReadUInt64BigEndian(sector[48..]);
        if (currentSize > long.MaxValue)
        {
            throw new VhdFormatException($"{where} gives an impossible virtual size of {currentSize} bytes");
        }
        return new VhdFooter(
            (VhdDiskType)type,
            (long)currentSize,
            BinaryPrimitives.ReadUInt64BigEndian(sector[16..]),
            new Guid(sector[68..84], bigEndian: true),
            BinaryPrimitives.ReadUInt32BigEndian(sector[24..]),
            BinaryPrimitives.ReadUInt32BigEndian(sector[28..]),
            BinaryPrimitives.ReadUInt32BigEndian(sector[56..]));
    }
}

/// <summary>A parent locator entry of a differencing disk's header.</summary>
internal readonly record struct VhdParentLocator(uint PlatformCode, uint DataSpaceSectors, uint DataLength, long DataOffset);

/// <summary>The 1024-byte dynamic disk header of dynamic and differencing disks.</summary>
internal sealed record VhdDynamicHeader(
    long TableOffset,
    int MaxTableEntries,
    int BlockSize,
    Guid ParentUniqueId,
    uint ParentTimestamp,
    string ParentName,
    VhdParentLocator[] Locators)
{
    private const int ChecksumOffset = 36;
    private const int ParentNameOffset = 64;
    private const int ParentNameSize = 512;
    private const int LocatorsOffset = 576;
    private const int LocatorSize = 24;
    private const int LocatorCount = 8;

    public void Write(Span<byte> header)
    {
        header[..VhdFormat.HeaderSize].Clear();
        VhdFormat.HeaderCookie.CopyTo(header);
        BinaryPrimitives.WriteUInt64BigEndian(header[8..], VhdFormat.NoDataOffset);
        BinaryPrimitives.WriteUInt64BigEndian(header[16..], (ulong)TableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(header[24..], VhdFormat.Version);
        BinaryPrimitives.WriteUInt32BigEndian(header[28..], (uint)MaxTableEntries);
        BinaryPrimitives.WriteUInt32BigEndian(header[32..], (uint)BlockSize);
        ParentUniqueId.TryWriteBytes(header[40..56], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32BigEndian(header[56..], ParentTimestamp);
        Encoding.BigEndianUnicode.GetBytes(ParentName, header.Slice(ParentNameOffset, ParentNameSize));
        for (var i = 0; i < Locators.Length && i < LocatorCount; i++)
        {
            var entry = header.Slice(LocatorsOffset + (i * LocatorSize), LocatorSize);
            BinaryPrimitives.WriteUInt32BigEndian(entry, Locators[i].PlatformCode);
            BinaryPrimitives.WriteUInt32BigEndian(entry[4..], Locators[i].DataSpaceSectors);
            BinaryPrimitives.WriteUInt32BigEndian(entry[8..], Locators[i].DataLength);
            BinaryPrimitives.WriteUInt64BigEndian(entry[16..], (ulong)Locators[i].DataOffset);
        }
        BinaryPrimitives.WriteUInt32BigEndian(header[ChecksumOffset..], VhdFormat.Checksum(header[..VhdFormat.HeaderSize], ChecksumOffset));
    }

    /// <summary>The longest parent name the header's 512-byte UTF-16 field holds.</summary>
    public static bool ParentNameFits(string name) => Encoding.BigEndianUnicode.GetByteCount(name) <= ParentNameSize;

    public static VhdDynamicHeader Parse(ReadOnlySpan<byte> header)
    {
        if (!header.StartsWith(VhdFormat.HeaderCookie))
        {
            throw new VhdFormatException("the dynamic disk header is missing (no \"cxsparse\" cookie where the footer points)");
        }
        var stored = BinaryPrimitives.ReadUInt32BigEndian(header[ChecksumOffset..]);
        var computed = VhdFormat.Checksum(header[..VhdFormat.HeaderSize], ChecksumOffset);
        if (stored != computed)
        {
            throw new VhdFormatException($"the dynamic disk header is corrupt: its checksum is 0x{stored:X8}, its contents sum to 0x{computed:X8}");
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(header[8..]) != VhdFormat.NoDataOffset)
        {
            throw new VhdFormatException("the dynamic disk header's data offset is not 0xFFFFFFFFFFFFFFFF as the specification requires");
        }
        var version = BinaryPrimitives.ReadUInt32BigEndian(header[24..]);
        if (version != VhdFormat.Version)
        {
            throw new VhdFormatException($"the dynamic disk header has version 0x{version:X8}; only 0x00010000 is defined");
        }
        var tableOffset = BinaryPrimitives.ReadUInt64BigEndian(header[16..]);
        if (tableOffset > long.MaxValue)
        {
            throw new VhdFormatException($"the block allocation table offset {tableOffset} is impossible");
        }
        var entries = BinaryPrimitives.ReadUInt32BigEndian(header[28..]);
        if (entries > VhdFormat.MaxTableEntries)
        {
            throw new VhdFormatException($"the block allocation table declares {entries} entries; at most {VhdFormat.MaxTableEntries} are accepted");
        }
        var blockSize = BinaryPrimitives.ReadUInt32BigEndian(header[32..]);
        if (blockSize < VhdFormat.SectorSize || !uint.IsPow2(blockSize) || blockSize > int.MaxValue)
        {
            throw new VhdFormatException($"the block size {blockSize} is not a power of two between 512 bytes and 1 GiB");
        }
        var locators = new VhdParentLocator[LocatorCount];
        for (var i = 0; i < LocatorCount; i++)
        {
            var entry = header.Slice(LocatorsOffset + (i * LocatorSize), LocatorSize);
            var offset = BinaryPrimitives.ReadUInt64BigEndian(entry[16..]);
            locators[i] = new VhdParentLocator(
                BinaryPrimitives.ReadUInt32BigEndian(entry),
                BinaryPrimitives.ReadUInt32BigEndian(entry[4..]),
                BinaryPrimitives.ReadUInt32BigEndian(entry[8..]),
                offset > long.MaxValue ? long.MaxValue : (long)offset);
        }
        var nameBytes = header.Slice(ParentNameOffset, ParentNameSize);
        var nameLength = nameBytes.Length;
        while (nameLength >= 2 && nameBytes[nameLength - 1] == 0 && nameBytes[nameLength - 2] == 0)
        {
            nameLength -= 2;
        }
        return new VhdDynamicHeader(
            (long)tableOffset,
            (int)entries,
            (int)blockSize,
            new Guid(header[40..56], bigEndian: true),
            BinaryPrimitives.ReadUInt32BigEndian(header[56..]),
            Encoding.BigEndianUnicode.GetString(nameBytes[..nameLength]),
            locators);
    }
}
