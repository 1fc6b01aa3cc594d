using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Simulator;

/// <summary>One simulated domain's mutable state; touched only under the backend's lock.</summary>
internal sealed class SimDomain(DomainConfig config, int domId, long overheadKib, TimeSpan createdAt)
{
    private string _console = "";

    public DomainConfig Config { get; } = config;

    public int DomId { get; } = domId;

    public long OverheadKib { get; } = overheadKib;

    public TimeSpan CreatedAt { get; } = createdAt;

    public DomainPowerState Power { get; set; } = DomainPowerState.Paused;

    public ShutdownReason? Reason { get; set; }

    public bool Built { get; set; }

    public long ActualKib { get; set; }

    public long TargetKib { get; set; }

    public long DynamicMin { get; set; } = config.Memory.DynamicMin;

    public long DynamicMax { get; set; } = config.Memory.DynamicMax;

    public int VcpusOnline { get; set; } = config.VcpusAtStartup;

    /// <summary>In plug order, as the guest saw them appear.</summary>
    public List<VbdState> Vbds { get; } = [];

    public SortedDictionary<int, VifState> Vifs { get; } = [];

    public Dictionary<string, IGuestDisk> Disks { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, DiskCounter> DiskCounters { get; } = new(StringComparer.Ordinal);

    public IGuestWorkload? Workload { get; set; }

    public SortedDictionary<string, string>? Agent { get; set; }

    public bool AgentScheduled { get; set; }

    /// <summary>The guest acknowledges shutdown requests and then does nothing (not kept across restarts).</summary>
    public bool IgnoresShutdownRequests { get; set; }

    /// <summary>The guest's RAM, once something needed its bytes (a live migration); null until then.</summary>
    public GuestMemory? Memory { get; set; }

    /// <summary>Up to when the guest's writes to <see cref="Memory"/> are accounted.</summary>
    public TimeSpan MemoryWrittenUpTo { get; set; }

    public long CounterBase { get; set; }

    /// <summary>Running time already accounted, excluding the current run.</summary>
    public TimeSpan RunningTime { get; set; }

    public TimeSpan? RunningSince { get; set; }

    public string ConsoleText => _console;

    public TimeSpan TotalRunning(TimeSpan now) => RunningTime + (RunningSince is { } since ? now - since : TimeSpan.Zero);

    public long Counter(TimeSpan now, TimeSpan period) => CounterBase + (TotalRunning(now).Ticks / period.Ticks);

    public void StopRunning(TimeSpan now)
    {
        if (RunningSince is { } since)
        {
            RunningTime += now - since;
            RunningSince = null;
        }
    }

    public void Console(string line, int capacity) => ConsoleReplace(_console + line + "\n", capacity);

    public void ConsoleReplace(string text, int capacity) =>
        _console = text.Length > capacity ? text[^capacity..] : text;

    public DomainState Snapshot(TimeSpan now, TimeSpan counterPeriod) => new()
    {
        Uuid = Config.Uuid,
        Name = Config.Name,
        DomId = DomId,
        Type = Config.Type,
        PowerState = Power,
        ShutdownReason = Reason,
        Built = Built,
        MemoryActual = MemoryModel.BytesOfKib(ActualKib),
        MemoryTarget = MemoryModel.BytesOfKib(TargetKib),
        MemoryOverhead = MemoryModel.BytesOfKib(OverheadKib),
        DynamicMin = DynamicMin,
        DynamicMax = DynamicMax,
        VcpusMax = Config.VcpusMax,
        VcpusOnline = VcpusOnline,
        Vbds = [.. Vbds],
        Vifs = [.. Vifs.Values],
        GuestAgent = Agent is null ? null : new GuestAgentData(new SortedDictionary<string, string>(Agent, StringComparer.Ordinal), PvDriversDetected: true),
        GuestCounter = Counter(now, counterPeriod),
        ConsoleText = _console,
        CreatedAt = CreatedAt,
    };
}

internal sealed class DiskCounter
{
    private long _read;
    private long _written;

    public long Read => Interlocked.Read(ref _read);

    public long Written => Interlocked.Read(ref _written);

    public void AddRead(long bytes) => Interlocked.Add(ref _read, bytes);

    public void AddWritten(long bytes) => Interlocked.Add(ref _written, bytes);
}

/// <summary>The guest's view of a disk: counts its I/O for the VBD stats; disposing it leaves the disk open (the VBD owns it).</summary>
internal sealed class CountingDisk(IGuestDisk inner, DiskCounter counter) : IGuestDisk
{
    public long Size => inner.Size;

    public bool Writable => inner.Writable;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await inner.ReadAsync(offset, buffer, cancellationToken);
        counter.AddRead(buffer.Length);
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await inner.WriteAsync(offset, data, cancellationToken);
        counter.AddWritten(data.Length);
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
