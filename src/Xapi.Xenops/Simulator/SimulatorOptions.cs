using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Simulator;

/// <summary>The simulated host and guests. Defaults are a small server with cooperative Linux guests.</summary>
public sealed record SimulatorOptions
{
    /// <summary>Physical memory of the simulated host, bytes (host_metrics.memory_total).</summary>
    public long HostMemoryBytes { get; init; } = 16L * 1024 * 1024 * 1024;

    /// <summary>What Xen and the control domain use, bytes (host.memory_overhead); not for guests.</summary>
    public long HostOverheadBytes { get; init; } = 1L * 1024 * 1024 * 1024;

    /// <summary>Memory the squeezer keeps free at all times, KiB.</summary>
    public long HostFreeReserveKib { get; init; } = Squeezer.DefaultHostFreeReserveKib;

    /// <summary>How many guest memory pages a running guest writes per second (10 MiB/s of 4 KiB pages by default).</summary>
    public double DirtyPagesPerSecond { get; init; } = 2560;

    /// <summary>The guest's pages it writes fall within its first this many bytes (its working set), as a busy guest rewrites the same buffers.</summary>
    public long DirtyWorkingSetBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>Pre-copy rounds after the first full one before the guest is paused whatever it still writes (libxc's max_iterations).</summary>
    public int MaxPrecopyRounds { get; init; } = 5;

    /// <summary>Pre-copy ends early once no more than this many pages are left to send (libxc's dirty_threshold).</summary>
    public int StopAndCopyPages { get; init; } = 50;

    /// <summary>How long after a domain first runs its guest agent publishes data and answers shutdown requests.</summary>
    public TimeSpan GuestAgentDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a guest takes to carry out an acknowledged shutdown/reboot/suspend/halt request.</summary>
    public TimeSpan ShutdownAckDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How fast a balloon driver moves memory_actual toward the target, bytes per simulated second.</summary>
    public long BalloonRateBytesPerSecond { get; init; } = 1L * 1024 * 1024 * 1024;

    /// <summary>The guest counter increments once per this much running (unpaused) time.</summary>
    public TimeSpan GuestCounterPeriod { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Events a subscriber may fall behind before its stream ends with an overflow.</summary>
    public int EventCapacity { get; init; } = 100_000;

    /// <summary>Characters of console text kept per domain (the oldest are dropped).</summary>
    public int ConsoleCapacity { get; init; } = 8192;

    /// <summary>The largest suspend image <see cref="SimulatorBackend.RestoreAsync"/> reads, bytes.</summary>
    public int MaxSuspendImageBytes { get; init; } = 1024 * 1024;

    /// <summary>
    /// Where the simulated hypervisor keeps its domains across daemon restarts (null = in memory
    /// only). Written after changes (see StateWriteDelay); a guest's counter resumes from the last write.
    /// </summary>
    public string? StatePath { get; init; }

    /// <summary>
    /// How long changes gather before the state file is written (zero: at every change). A process
    /// that dies in between loses the domains' last changes, as a host that loses power loses its guests.
    /// </summary>
    public TimeSpan StateWriteDelay { get; init; }

    /// <summary>What the simulated guests report through their agent.</summary>
    public GuestOsProfile GuestOs { get; init; } = GuestOsProfile.Debian12;

    /// <summary>The disks behind VBDs, from the daemon's data path; null = guests see no bytes.</summary>
    public IGuestDiskProvider? DiskProvider { get; init; }

    /// <summary>The workload a guest runs, per domain; null = guests idle.</summary>
    public Func<DomainConfig, IGuestWorkload?>? WorkloadFactory { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>The operating system and PV drivers a simulated guest agent reports (vm-facts.md §8.2 keys).</summary>
public sealed record GuestOsProfile(
    string Name,
    string Uname,
    string Distro,
    string MajorVersion,
    string MinorVersion,
    string PvDriversMajor,
    string PvDriversMinor,
    string PvDriversMicro,
    string PvDriversBuild)
{
    /// <summary>Whether the agent applies static IP settings pushed by the toolstack (VIF.configure_ipv4/ipv6).</summary>
    public bool StaticIpSetting { get; init; } = true;

    public static GuestOsProfile Debian12 { get; } = new(
        "Debian GNU/Linux 12 (bookworm)", "6.1.0-28-amd64", "debian", "12", "8", "9", "4", "0", "11");
}
