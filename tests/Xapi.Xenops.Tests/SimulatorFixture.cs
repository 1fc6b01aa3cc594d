using System.Threading.Channels;
using Xapi.Xenops.Memory;
using Xapi.Xenops.Simulator;

namespace Xapi.Xenops.Tests;

/// <summary>Builders shared by the simulator tests.</summary>
internal static class Sim
{
    public const long MiB = 1024 * 1024;
    public const long GiB = 1024 * MiB;

    public static Guid Id(int n) => Guid.Parse($"00000000-0000-0000-0000-{n:D12}");

    public static DomainConfig Vm(int n, long dynamicMin = GiB, long dynamicMax = GiB, int vcpus = 1) => new()
    {
        Uuid = Id(n),
        Name = $"vm{n}",
        Type = DomainType.Hvm,
        Memory = new MemoryRange(dynamicMin, dynamicMin, dynamicMax, dynamicMax),
        VcpusMax = vcpus,
        VcpusAtStartup = vcpus,
        Vifs = [new VifConfig(0, $"02:00:00:00:00:{n:x2}", "xenbr0")],
    };

    /// <summary>The xenopsd VM.start order over the seam.</summary>
    public static async Task<DomainState> StartAsync(IHypervisor hypervisor, DomainConfig config)
    {
        await hypervisor.CreateAsync(config);
        await hypervisor.BuildAsync(config.Uuid);
        foreach (var vbd in config.Vbds)
        {
            await hypervisor.PlugVbdAsync(config.Uuid, vbd);
        }

        foreach (var vif in config.Vifs)
        {
            await hypervisor.PlugVifAsync(config.Uuid, vif);
        }

        return await hypervisor.UnpauseAsync(config.Uuid);
    }

    /// <summary>Everything emitted so far, without waiting.</summary>
    public static List<DomainEvent> Drain(Channel<DomainEvent> channel)
    {
        var events = new List<DomainEvent>();
        while (channel.Reader.TryRead(out var domainEvent))
        {
            events.Add(domainEvent);
        }

        return events;
    }
}

/// <summary>A disk in memory, standing in for the daemon's storage data path.</summary>
internal sealed class MemoryDisk(long size) : IGuestDisk
{
    private readonly byte[] _bytes = new byte[size];

    public long Size => _bytes.Length;

    public bool Writable => true;

    public bool Disposed { get; private set; }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        _bytes.AsMemory((int)offset, buffer.Length).CopyTo(buffer);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        data.CopyTo(_bytes.AsMemory((int)offset));
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        return ValueTask.CompletedTask;
    }
}

/// <summary>Hands out one <see cref="MemoryDisk"/> per disk id, kept across opens (as a VDI outlives its VBDs).</summary>
internal sealed class MemoryDiskProvider(long size) : IGuestDiskProvider
{
    private readonly Dictionary<string, MemoryDisk> _disks = [];

    public IReadOnlyDictionary<string, MemoryDisk> Disks => _disks;

    public ValueTask<IGuestDisk> OpenAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken)
    {
        var id = vbd.Disk!.Id;
        if (!_disks.TryGetValue(id, out var disk) || disk.Disposed)
        {
            var fresh = new MemoryDisk(size);
            if (disk is not null)
            {
                // Reopening after an unplug: same bytes, new handle.
                var buffer = new byte[size];
                disk.ReadAsync(0, buffer, cancellationToken).AsTask().GetAwaiter().GetResult();
                fresh.WriteAsync(0, buffer, cancellationToken).AsTask().GetAwaiter().GetResult();
            }

            _disks[id] = disk = fresh;
        }

        return ValueTask.FromResult<IGuestDisk>(disk);
    }
}
