using System.Buffers;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Xapi.Server.Hosting;

namespace Xapi.Server.Tests;

/// <summary>The connection buffers Kestrel receives disk images into.</summary>
public class LargeBlockMemoryPoolTests
{
    [Test]
    public void Every_block_is_64_KiB_whatever_size_is_asked_and_larger_ones_are_refused()
    {
        using var pool = new LargeBlockMemoryPool();
        using var small = pool.Rent(1);
        using var any = pool.Rent();
        Assert.Multiple(() =>
        {
            Assert.That(pool.MaxBufferSize, Is.EqualTo(64 * 1024));
            Assert.That(small.Memory.Length, Is.EqualTo(64 * 1024));
            Assert.That(any.Memory.Length, Is.EqualTo(64 * 1024));
            Assert.That(() => pool.Rent((64 * 1024) + 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        });
    }

    [Test]
    public void A_returned_block_is_lent_again_but_only_once_even_if_disposed_twice()
    {
        using var pool = new LargeBlockMemoryPool();
        var first = pool.Rent();
        var memory = first.Memory;
        first.Dispose();
        first.Dispose();
        using var again = pool.Rent();
        using var other = pool.Rent();
        Assert.Multiple(() =>
        {
            Assert.That(again.Memory.Equals(memory), Is.True, "the returned block is reused");
            Assert.That(other.Memory.Equals(memory), Is.False, "a double dispose must not lend one block to two owners");
        });
    }

    [Test]
    public void At_most_256_idle_blocks_are_kept()
    {
        using var pool = new LargeBlockMemoryPool();
        var blocks = Enumerable.Range(0, LargeBlockMemoryPool.MaxPooledBlocks + 44).Select(_ => pool.Rent()).ToList();
        var memories = blocks.Select(b => b.Memory).ToList();
        blocks.ForEach(b => b.Dispose());
        var reused = Enumerable.Range(0, LargeBlockMemoryPool.MaxPooledBlocks + 44).Select(_ => pool.Rent()).ToList();
        var kept = reused.Count(r => memories.Any(m => m.Equals(r.Memory)));
        Assert.That(kept, Is.EqualTo(LargeBlockMemoryPool.MaxPooledBlocks));
    }

    [Test]
    public async Task The_daemons_connections_use_the_large_blocks()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var pool = daemon.Host.Services.GetRequiredService<IMemoryPoolFactory<byte>>().Create();
        Assert.That(pool.MaxBufferSize, Is.EqualTo(LargeBlockMemoryPool.BlockSize));
    }
}
