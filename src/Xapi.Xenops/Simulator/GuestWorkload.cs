using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// What a simulated guest does while it runs; the simulator calls one step at a time
/// (<see cref="SimulatorBackend.RunWorkloadStepAsync"/>), so tests decide how much work happens.
/// </summary>
public interface IGuestWorkload
{
    ValueTask StepAsync(IGuestContext guest, CancellationToken cancellationToken);
}

/// <summary>The running guest as its workload sees it.</summary>
public interface IGuestContext
{
    Guid Uuid { get; }

    int DomId { get; }

    /// <summary>The guest's counter at the start of this step.</summary>
    long Counter { get; }

    /// <summary>The guest's disks with data behind them, by VBD device.</summary>
    IReadOnlyDictionary<string, IGuestDisk> Disks { get; }

    void WriteConsole(string line);
}

/// <summary>
/// A verifiable disk pattern: each 4 KiB block written carries its own header (magic, VM uuid,
/// step, block number) and a body derived from them, so a reader can check any block without
/// knowing the writer's history — through a snapshot, a suspend or a migration.
/// </summary>
public static class DiskPattern
{
    public const int BlockSize = 4096;
    private const int HeaderSize = 40;
    private static readonly byte[] s_magic = "XSIMPAT1"u8.ToArray();

    public static byte[] Block(Guid uuid, long step, long block)
    {
        var buffer = new byte[BlockSize];
        s_magic.CopyTo(buffer, 0);
        uuid.TryWriteBytes(buffer.AsSpan(8, 16));
        BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(24), step);
        BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(32), block);
        FillBody(buffer.AsSpan(0, HeaderSize), buffer.AsSpan(HeaderSize));
        return buffer;
    }

    /// <summary>Reads a block's header if it holds an intact pattern block; false for zeros or damage.</summary>
    public static bool TryReadBlock(ReadOnlySpan<byte> buffer, out Guid uuid, out long step, out long block)
    {
        uuid = Guid.Empty;
        step = block = 0;
        if (buffer.Length != BlockSize || !buffer[..8].SequenceEqual(s_magic))
        {
            return false;
        }

        Span<byte> expected = stackalloc byte[BlockSize - HeaderSize];
        FillBody(buffer[..HeaderSize], expected);
        if (!buffer[HeaderSize..].SequenceEqual(expected))
        {
            return false;
        }

        uuid = new Guid(buffer.Slice(8, 16));
        step = BinaryPrimitives.ReadInt64LittleEndian(buffer[24..]);
        block = BinaryPrimitives.ReadInt64LittleEndian(buffer[32..]);
        return true;
    }

    private static void FillBody(ReadOnlySpan<byte> header, Span<byte> body)
    {
        // SHA-256 in counter mode over the header: deterministic and different for every block.
        Span<byte> input = stackalloc byte[HeaderSize + 4];
        header.CopyTo(input);
        Span<byte> hash = stackalloc byte[32];
        for (var i = 0; i * 32 < body.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(input[HeaderSize..], i);
            SHA256.HashData(input, hash);
            hash[..Math.Min(32, body.Length - (i * 32))].CopyTo(body[(i * 32)..]);
        }
    }
}

/// <summary>
/// A guest that writes one pattern block per step to each writable disk, cycling through the
/// disk (block = step mod blocks), and remembers what it wrote so <see cref="VerifyAsync"/> can
/// check the disk holds exactly its latest writes.
/// </summary>
public sealed class DiskPatternWorkload : IGuestWorkload
{
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Device, long Block), long> _written = [];
    private long _step;

    /// <summary>Blocks written so far, by (device, block): the step that last wrote each.</summary>
    public IReadOnlyDictionary<(string Device, long Block), long> Written
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<(string Device, long Block), long>(_written);
            }
        }
    }

    public async ValueTask StepAsync(IGuestContext guest, CancellationToken cancellationToken)
    {
        long step;
        lock (_gate)
        {
            step = ++_step;
        }

        foreach (var (device, disk) in guest.Disks.OrderBy(d => d.Key, StringComparer.Ordinal))
        {
            var blocks = disk.Size / DiskPattern.BlockSize;
            if (!disk.Writable || blocks == 0)
            {
                continue;
            }

            var block = (step - 1) % blocks;
            await disk.WriteAsync(block * DiskPattern.BlockSize, DiskPattern.Block(guest.Uuid, step, block), cancellationToken);
            await disk.FlushAsync(cancellationToken);
            lock (_gate)
            {
                _written[(device, block)] = step;
            }
        }
    }

    /// <summary>The blocks of <paramref name="device"/> that do not hold what this workload last wrote there.</summary>
    public async Task<IReadOnlyList<long>> VerifyAsync(Guid uuid, string device, IGuestDisk disk, CancellationToken cancellationToken)
    {
        var bad = new List<long>();
        var buffer = new byte[DiskPattern.BlockSize];
        foreach (var ((written, block), step) in Written.OrderBy(w => w.Key.Block))
        {
            if (written != device)
            {
                continue;
            }

            await disk.ReadAsync(block * DiskPattern.BlockSize, buffer, cancellationToken);
            if (!DiskPattern.TryReadBlock(buffer, out var owner, out var readStep, out var readBlock)
                || owner != uuid || readStep != step || readBlock != block)
            {
                bad.Add(block);
            }
        }

        return bad;
    }
}
