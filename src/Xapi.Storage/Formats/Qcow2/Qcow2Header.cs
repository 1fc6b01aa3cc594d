using System.Buffers.Binary;
using System.Text;

namespace Xapi.Storage.Formats.Qcow2;

/// <summary>
/// The few fields of a qcow2 header a scan needs (virtual size, backing file name), read
/// directly so listing an SR does not start a process per image. Everything else about the
/// format is left to qemu-img and qemu-nbd.
/// </summary>
public readonly record struct Qcow2Header(long VirtualSize, string? BackingFile)
{
    private static ReadOnlySpan<byte> Magic => [0x51, 0x46, 0x49, 0xFB];

    /// <summary>Reads the header; false when the file is not a qcow2 image or is damaged.</summary>
    public static bool TryRead(string path, out Qcow2Header header)
    {
        header = default;
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return TryRead((offset, buffer) => RandomAccess.Read(handle, buffer, offset), RandomAccess.GetLength(handle), out header);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// Reads the header through <paramref name="read"/> (offset, buffer → bytes read) from an
    /// image of <paramref name="length"/> bytes, for images that are not local files.
    /// </summary>
    public static bool TryRead(Func<long, byte[], int> read, long length, out Qcow2Header header)
    {
        header = default;
        var fixedPart = new byte[32];
        if (read(0, fixedPart) < fixedPart.Length || !fixedPart.AsSpan(0, 4).SequenceEqual(Magic))
        {
            return false;
        }
        var version = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(4));
        var backingOffset = BinaryPrimitives.ReadInt64BigEndian(fixedPart.AsSpan(8));
        var backingLength = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(16));
        var size = BinaryPrimitives.ReadInt64BigEndian(fixedPart.AsSpan(24));
        if (version is < 2 or > 3 || size < 0)
        {
            return false;
        }
        string? backing = null;
        if (backingOffset != 0)
        {
            // qemu limits backing names to 1023 bytes.
            if (backingLength is 0 or > 1023 || backingOffset < 0 || backingOffset > length)
            {
                return false;
            }
            var name = new byte[backingLength];
            if (read(backingOffset, name) < name.Length)
            {
                return false;
            }
            backing = Encoding.UTF8.GetString(name);
        }
        header = new Qcow2Header(size, backing);
        return true;
    }
}
