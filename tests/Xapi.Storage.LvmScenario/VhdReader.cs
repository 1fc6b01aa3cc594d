using System.Buffers.Binary;

/// <summary>
/// A dynamic VHD read back into the disk it describes, written from the VHD specification
/// (footer, dynamic header, block allocation table, per-block sector bitmaps) and not from the
/// daemon's writer, so an export is checked by an independent reader.
/// </summary>
internal static class VhdReader
{
    private const int Sector = 512;
    private const int DynamicDisk = 3;
    private const uint Unallocated = 0xFFFFFFFF;

    public static byte[] ToRaw(ReadOnlySpan<byte> vhd)
    {
        if (vhd.Length < 3 * Sector || !vhd[..8].SequenceEqual("conectix"u8))
        {
            throw new InvalidDataException("no VHD footer copy at the start");
        }
        var footer = vhd[..Sector];
        if (!vhd[^Sector..].SequenceEqual(footer))
        {
            throw new InvalidDataException("the footer at the end differs from its copy at the start");
        }
        var diskType = BinaryPrimitives.ReadInt32BigEndian(footer[60..]);
        if (diskType != DynamicDisk)
        {
            throw new InvalidDataException($"disk type {diskType}, not a dynamic VHD");
        }
        var size = BinaryPrimitives.ReadInt64BigEndian(footer[48..]);
        var header = vhd[checked((int)BinaryPrimitives.ReadInt64BigEndian(footer[16..]))..];
        if (!header[..8].SequenceEqual("cxsparse"u8))
        {
            throw new InvalidDataException("no dynamic disk header");
        }
        var table = checked((int)BinaryPrimitives.ReadInt64BigEndian(header[16..]));
        var entries = BinaryPrimitives.ReadInt32BigEndian(header[28..]);
        var blockSize = BinaryPrimitives.ReadInt32BigEndian(header[32..]);
        var sectorsPerBlock = blockSize / Sector;
        var bitmapBytes = (sectorsPerBlock / 8 + Sector - 1) / Sector * Sector;
        var disk = new byte[size];
        for (var block = 0; block < entries && (long)block * blockSize < size; block++)
        {
            var entry = BinaryPrimitives.ReadUInt32BigEndian(vhd[(table + 4 * block)..]);
            if (entry == Unallocated)
            {
                continue;
            }
            var start = checked((int)(entry * (long)Sector));
            var bitmap = vhd.Slice(start, bitmapBytes);
            var data = vhd.Slice(start + bitmapBytes, blockSize);
            for (var sector = 0; sector < sectorsPerBlock; sector++)
            {
                var offset = (long)block * blockSize + (long)sector * Sector;
                if (offset >= size || (bitmap[sector / 8] & (0x80 >> (sector % 8))) == 0)
                {
                    continue;
                }
                data.Slice(sector * Sector, Sector).CopyTo(disk.AsSpan((int)offset));
            }
        }
        return disk;
    }
}
