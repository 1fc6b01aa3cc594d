using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// A simulated domain's suspend image: magic, length, a JSON body with the guest's state, and the
/// body's SHA-256, so a truncated or altered image is refused rather than resumed wrongly.
/// </summary>
internal static class SuspendImage
{
    private static readonly byte[] s_magic = "XSIMSUS1"u8.ToArray();

    public static async ValueTask WriteAsync(Stream destination, SuspendImageBody body, CancellationToken cancellationToken)
    {
        var json = JsonSerializer.SerializeToUtf8Bytes(body);
        var header = new byte[12];
        s_magic.CopyTo(header, 0);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), json.Length);
        await destination.WriteAsync(header, cancellationToken);
        await destination.WriteAsync(json, cancellationToken);
        await destination.WriteAsync(SHA256.HashData(json), cancellationToken);
        await destination.FlushAsync(cancellationToken);
    }

    public static async ValueTask<SuspendImageBody> ReadAsync(Stream source, int maxBytes, CancellationToken cancellationToken)
    {
        var header = new byte[12];
        await ReadExactlyAsync(source, header, cancellationToken);
        if (!header.AsSpan(0, 8).SequenceEqual(s_magic))
        {
            throw new SuspendImageException("not a simulator suspend image");
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        if (length <= 0 || length > maxBytes)
        {
            throw new SuspendImageException($"suspend image body of {length} bytes is outside 1..{maxBytes}");
        }

        var json = new byte[length];
        await ReadExactlyAsync(source, json, cancellationToken);
        var hash = new byte[32];
        await ReadExactlyAsync(source, hash, cancellationToken);
        if (!SHA256.HashData(json).AsSpan().SequenceEqual(hash))
        {
            throw new SuspendImageException("suspend image checksum mismatch");
        }

        try
        {
            return JsonSerializer.Deserialize<SuspendImageBody>(json) ?? throw new SuspendImageException("empty suspend image");
        }
        catch (JsonException e)
        {
            throw new SuspendImageException("suspend image body is not valid", e);
        }
    }

    private static async ValueTask ReadExactlyAsync(Stream source, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            await source.ReadExactlyAsync(buffer, cancellationToken);
        }
        catch (EndOfStreamException e)
        {
            throw new SuspendImageException("suspend image is truncated", e);
        }
    }
}

internal sealed record SuspendImageBody(
    Guid Uuid,
    string Name,
    long GuestCounter,
    long MemoryActualKib,
    int VcpusOnline,
    Dictionary<string, string>? GuestAgent,
    string ConsoleText);
