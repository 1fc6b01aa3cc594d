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
            Span<byte> fixedPart = stackalloc byte[32];
            if (RandomAccess.Read(handle, fixedPart, 0) < fixedPart.Length || !fixedPart[..4].SequenceEqual(Magic))
            {
                return false;
            }
            var version = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[4..]);
            var backingOffset = BinaryPrimitives.ReadInt64BigEndian(fixedPart[8..]);
            var backingLength = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[16..]);
            var size = BinaryPrimitives.ReadInt64BigEndian(fixedPart[24..]);
            if (version is < 2 or > 3 || size < 0)
            {
                return false;
            }
            string? backing = null;
            if (backingOffset != 0)
            {
                // qemu limits backing names to 1023 bytes.
                if (backingLength is 0 or > 1023 || backingOffset < 0 || backingOffset > RandomAccess.GetLength(handle))
                {
                    return false;
                }
                var name = new byte[backingLength];
                if (RandomAccess.Read(handle, name, backingOffset) < name.Length)
                {
                    return false;
                }
                backing = Encoding.UTF8.GetString(name);
            }
            header = new Qcow2Header(size, backing);
            return true;
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
}
