using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace Xapi.Server.Hosting;

/// <summary>
/// Kestrel's connection buffers in blocks of <see cref="LargeBlockMemoryPool.BlockSize"/> bytes
/// instead of its own 4 KiB ones. Kestrel receives into one block per socket read, so with 4 KiB
/// blocks a disk image PUT (4 GiB) took a million receive calls and their scheduling, and was
/// bounded by that rather than by copying: the data path's imports ran at a fifth of what the
/// disk could take. Sends go out in fewer, larger pieces too.
/// </summary>
public sealed class LargeBlockMemoryPoolFactory : IMemoryPoolFactory<byte>
{
    public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new LargeBlockMemoryPool();
}

/// <summary>
/// Fixed-size pinned blocks (the socket layer pins whatever it receives into), reused through a
/// bounded free list: at most <see cref="MaxPooledBlocks"/> idle blocks are kept; beyond that a
/// returned block is left to the garbage collector, so a burst of transfers does not pin memory
/// for ever. Rent never hands out less than a block, nor more; asking for more is refused, as
/// Kestrel's own pool does (pipes take larger buffers elsewhere).
/// </summary>
public sealed class LargeBlockMemoryPool : MemoryPool<byte>
{
    public const int BlockSize = 64 * 1024;

    /// <summary>16 MiB of idle blocks at most.</summary>
    public const int MaxPooledBlocks = 256;

    private readonly ConcurrentQueue<Block> _free = new();
    private int _freeCount;
    private bool _disposed;

    public override int MaxBufferSize => BlockSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, BlockSize);
        if (_free.TryDequeue(out var block))
        {
            Interlocked.Decrement(ref _freeCount);
            block.Lease();
            return block;
        }
        var fresh = new Block(this);
        fresh.Lease();
        return fresh;
    }

    private void Return(Block block)
    {
        if (Volatile.Read(ref _disposed))
        {
            return;
        }
        if (Interlocked.Increment(ref _freeCount) > MaxPooledBlocks)
        {
            Interlocked.Decrement(ref _freeCount);
            return;
        }
        _free.Enqueue(block);
    }

    protected override void Dispose(bool disposing)
    {
        Volatile.Write(ref _disposed, true);
        _free.Clear();
    }

    private sealed class Block(LargeBlockMemoryPool pool) : IMemoryOwner<byte>
    {
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
        private int _leased;

        public Memory<byte> Memory => _array;

        public void Lease() => Volatile.Write(ref _leased, 1);

        public void Dispose()
        {
            // A second Dispose of the same lease must not put the block in the free list twice.
            if (Interlocked.Exchange(ref _leased, 0) == 1)
            {
                pool.Return(this);
            }
        }
    }
}
