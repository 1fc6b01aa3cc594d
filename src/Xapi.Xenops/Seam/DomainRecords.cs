using Xapi.Xenops.Memory;

namespace Xapi.Xenops;

/// <summary>The virtualisation mode of a domain; HVM and PVH share one memory model.</summary>
public enum DomainType
{
    Hvm,
    Pv,
    Pvh,
    PvInPvh,
}

/// <summary>
/// What a domain is created from: everything the backend needs, nothing of the database.
/// The VM uuid is the domain's identity across reboots (the domid changes with each domain).
/// </summary>
public sealed record DomainConfig
{
    public required Guid Uuid { get; init; }

    public required string Name { get; init; }

    public required DomainType Type { get; init; }

    /// <summary>Bytes; the backend reserves between dynamic_min and dynamic_max (plus overhead).</summary>
    public required MemoryRange Memory { get; init; }

    public int VcpusMax { get; init; } = 1;

    /// <summary>vCPUs online at boot; at most <see cref="VcpusMax"/>.</summary>
    public int VcpusAtStartup { get; init; } = 1;

    public double ShadowMultiplier { get; init; } = MemoryModel.DefaultShadowMultiplier;

    /// <summary>Whether the guest has a balloon driver; one without keeps its reservation.</summary>
    public bool CanBalloon { get; init; } = true;

    /// <summary>The devices plugged at start, in order; more can be plugged later.</summary>
    public IReadOnlyList<VbdConfig> Vbds { get; init; } = [];

    public IReadOnlyList<VifConfig> Vifs { get; init; } = [];

    /// <summary>
    /// The kernel a PV or PVH guest boots directly (the VM's PV_kernel: a path in the control
    /// domain); null when the guest boots through its bootloader or firmware.
    /// </summary>
    public string? Kernel { get; init; }

    /// <summary>The initial ramdisk beside <see cref="Kernel"/> (PV_ramdisk); null for none.</summary>
    public string? Ramdisk { get; init; }

    /// <summary>The kernel's command line (PV_args); null for none.</summary>
    public string? KernelArgs { get; init; }

    /// <summary>
    /// The order in which an HVM guest's firmware tries its devices (c: disk, d: CD, n: network);
    /// null for PV and PVH guests.
    /// </summary>
    public string? BootOrder { get; init; }

    /// <summary>Where an HVM guest's emulated serial port goes, in qemu's terms (pty, none, file:PATH, tcp:HOST:PORT); null for PV and PVH guests.</summary>
    public string? Serial { get; init; }

    /// <summary>The VM's platform/other settings a backend may read (opaque to the seam).</summary>
    public IReadOnlyDictionary<string, string> Platform { get; init; } = new Dictionary<string, string>();
}

public enum VbdMode
{
    ReadOnly,
    ReadWrite,
}

public enum VbdKind
{
    Disk,
    CdRom,
    Floppy,
}

/// <summary>
/// A virtual block device: its position in the guest (the VBD's <c>device</c>, e.g. "xvda",
/// "hdd", or the userdevice number as text), and the disk behind it (null = an empty drive).
/// </summary>
public sealed record VbdConfig(string Device, VbdKind Kind, VbdMode Mode, DiskBinding? Disk);

/// <summary>
/// An attached disk as the daemon names it to the backend; the daemon's
/// <see cref="IGuestDiskProvider"/> turns it into bytes. <paramref name="Id"/> is opaque to the
/// seam (the VDI's uuid, an attach path, …).
/// </summary>
public sealed record DiskBinding(string Id);

/// <summary>A virtual network interface: its index in the guest, MAC and the bridge it joins.</summary>
public sealed record VifConfig(int Device, string Mac, string Bridge, int Mtu = 1500);

/// <summary>The power state of a domain as the hypervisor knows it.</summary>
public enum DomainPowerState
{
    /// <summary>Created (and maybe built) but not running: every domain starts so.</summary>
    Paused,

    Running,

    /// <summary>The domain stopped (see <see cref="ShutdownReason"/>) and waits to be destroyed.</summary>
    Shutdown,
}

/// <summary>Why a domain shut down — what xenopsd turns into Needs_poweroff/reboot/suspend/crashdump.</summary>
public enum ShutdownReason
{
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Halt,
}

/// <summary>What the toolstack asks a guest to do (the guest may ignore it).</summary>
public enum ShutdownRequest
{
    Poweroff,
    Reboot,
    Suspend,
    Halt,
}

/// <summary>A snapshot of one domain; immutable, so it can travel in events.</summary>
public sealed record DomainState
{
    public required Guid Uuid { get; init; }

    public required string Name { get; init; }

    public required int DomId { get; init; }

    public required DomainType Type { get; init; }

    public required DomainPowerState PowerState { get; init; }

    public ShutdownReason? ShutdownReason { get; init; }

    /// <summary>The domain has been built (kernel/firmware loaded or state restored) and can be unpaused.</summary>
    public required bool Built { get; init; }

    /// <summary>Guest memory now, bytes (what VM_metrics.memory_actual reports).</summary>
    public required long MemoryActual { get; init; }

    /// <summary>The balloon target, bytes (VM.memory_target).</summary>
    public required long MemoryTarget { get; init; }

    /// <summary>Memory the domain costs the host beyond its guest memory, bytes.</summary>
    public required long MemoryOverhead { get; init; }

    public required long DynamicMin { get; init; }

    public required long DynamicMax { get; init; }

    public required int VcpusMax { get; init; }

    public required int VcpusOnline { get; init; }

    public required IReadOnlyList<VbdState> Vbds { get; init; }

    public required IReadOnlyList<VifState> Vifs { get; init; }

    /// <summary>What the guest agent published; null until the agent runs (and after the domain stops).</summary>
    public GuestAgentData? GuestAgent { get; init; }

    /// <summary>The simulated guest's own state, carried through suspend/resume and migration.</summary>
    public required long GuestCounter { get; init; }

    /// <summary>The tail of the text console (bounded).</summary>
    public required string ConsoleText { get; init; }

    /// <summary>Backend time the domain was created.</summary>
    public required TimeSpan CreatedAt { get; init; }
}

public sealed record VbdState(string Device, VbdKind Kind, VbdMode Mode, DiskBinding? Disk);

public sealed record VifState(int Device, string Mac, string Bridge);

/// <summary>
/// The guest agent's data as it lies in the domain's xenstore tree, paths relative to the domain
/// (<c>attr/vif/0/ipv4/0</c>, <c>data/os_distro</c>, <c>control/feature-balloon</c>, …). The real
/// backend reads xenstore; both give the daemon the same shape, which
/// <see cref="Guest.GuestAgentParser"/> turns into VM_guest_metrics maps.
/// </summary>
public sealed record GuestAgentData(IReadOnlyDictionary<string, string> Xenstore, bool PvDriversDetected);

/// <summary>
/// Counters since the domain was created. <paramref name="PagesDirtied"/> counts guest memory page
/// writes (what a live migration's pre-copy must send again); a page written twice counts twice.
/// </summary>
public sealed record DomainStats(
    Guid Uuid,
    int DomId,
    TimeSpan CpuTime,
    long MemoryActual,
    long MemoryTarget,
    IReadOnlyList<VbdStats> Vbds,
    IReadOnlyList<VifStats> Vifs,
    long PagesDirtied = 0);

public sealed record VbdStats(string Device, long BytesRead, long BytesWritten);

public sealed record VifStats(int Device, long BytesReceived, long BytesSent);

/// <summary>The host's memory as the backend accounts it, bytes.</summary>
public sealed record HostMemoryInfo(long Total, long HostOverhead, long Free);

public enum DomainEventKind
{
    Created,
    Built,
    Restored,
    Paused,
    Unpaused,

    /// <summary>The domain stopped; <see cref="DomainState.ShutdownReason"/> says why (guest request, crash, suspend).</summary>
    Shutdown,

    Destroyed,
    DevicePlugged,
    DeviceUnplugged,
    MediaChanged,
    MemoryChanged,
    VcpusChanged,
    GuestAgentChanged,
}

/// <summary>
/// One change to one domain, in the backend's order (<paramref name="Sequence"/> increases by one
/// per event); <paramref name="State"/> is the domain after the change (before it, for Destroyed).
/// </summary>
public sealed record DomainEvent(long Sequence, DomainEventKind Kind, DomainState State);
