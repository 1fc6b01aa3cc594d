using Microsoft.Extensions.Logging;
using Xapi.Model;
using Xapi.Storage.DataPath;

namespace Xapi.Storage;

/// <summary>
/// One SR type's driver, shaped like SMAPI: SR create/attach/detach/scan/probe/delete/update and
/// VDI create/delete/attach/activate/deactivate/detach/snapshot/clone/resize/introduce/compose,
/// plus the data path and the garbage collector. Drivers touch storage only: they never write
/// the pool database; what they report flows into it in one place (<see cref="StorageRecords"/>).
/// An operation a driver does not offer raises <see cref="SmException.Unimplemented"/>, as
/// SMAPIv1's base classes do (see <see cref="SrDriver"/>).
/// </summary>
public interface ISrDriver
{
    SmDescription Description { get; }

    /// <summary>Makes new, empty storage. Returns the device_config to keep when the driver changed it.</summary>
    ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken);

    /// <summary>Removes the storage; refuses with SR not empty while any visible VDI is left.</summary>
    ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken);

    /// <summary>Makes the SR usable on this host, finishing anything a crash interrupted.</summary>
    ValueTask AttachAsync(SrContext sr, CancellationToken cancellationToken);

    ValueTask DetachAsync(SrContext sr, CancellationToken cancellationToken);

    /// <summary>What storage exists at a device_config: the XML document SR.probe returns.</summary>
    ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken);

    /// <summary>Every VDI the storage holds (hidden chain nodes included) and the SR's sizes.</summary>
    ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken);

    /// <summary>The SR's sizes (SR.update).</summary>
    ValueTask<SrStat> StatAsync(SrContext sr, CancellationToken cancellationToken);

    ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken);

    ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken);

    /// <summary>A read-only copy of the VDI's content now, sharing its data where the format can.</summary>
    ValueTask<ChainChange> SnapshotVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken);

    /// <summary>A writable copy of the VDI's content now, sharing its data where the format can.</summary>
    ValueTask<ChainChange> CloneVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken);

    ValueTask<VdiInfo> ResizeVdiAsync(SrContext sr, VdiInfo vdi, long newSize, CancellationToken cancellationToken);

    /// <summary>Takes storage that exists at <paramref name="location"/> into the SR as a VDI.</summary>
    ValueTask<VdiInfo> IntroduceVdiAsync(SrContext sr, string uuid, string location, CancellationToken cancellationToken);

    /// <summary>What the hypervisor needs to give a domain this disk.</summary>
    ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken);

    ValueTask DetachVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken);

    ValueTask ActivateVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken);

    ValueTask DeactivateVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken);

    /// <summary>Makes <paramref name="child"/>'s image a delta over <paramref name="parent"/>'s (VDI.compose).</summary>
    ValueTask ComposeVdiAsync(SrContext sr, VdiInfo parent, VdiInfo child, CancellationToken cancellationToken);

    /// <summary>Opens the VDI's bytes for the data path (import, export, NBD, copy).</summary>
    ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken);

    /// <summary>
    /// The extents where <paramref name="vdi"/> may differ from <paramref name="baseVdi"/>, in
    /// order; null when the driver cannot tell (the caller then compares or sends everything).
    /// </summary>
    ValueTask<IReadOnlyList<DiskExtent>?> ChangedExtentsAsync(SrContext sr, VdiInfo vdi, VdiInfo baseVdi, CancellationToken cancellationToken);

    /// <summary>
    /// One step of garbage collection (removing unused chain nodes, coalescing a chain), or
    /// <see cref="GcStep.Idle"/> when nothing is left to do. Each step is crash-safe: killed at
    /// any point, the next attach or step finishes or undoes it without changing any VDI's data.
    /// </summary>
    ValueTask<GcStep> CollectGarbageAsync(SrContext sr, Func<string, bool> inUse, CancellationToken cancellationToken);
}

/// <summary>The SR a driver call is about.</summary>
public sealed record SrContext(
    string Uuid,
    IReadOnlyDictionary<string, string> DeviceConfig,
    IReadOnlyDictionary<string, string> SmConfig,
    string RuntimeDirectory,
    ILogger Logger)
{
    public string? Config(string key) => DeviceConfig.TryGetValue(key, out var value) ? value : null;
}

/// <summary>An SR.probe: the configuration to look at, with nothing created.</summary>
public sealed record ProbeContext(IReadOnlyDictionary<string, string> DeviceConfig, IReadOnlyDictionary<string, string> SmConfig, ILogger Logger);

/// <summary>The sizes of an SR, in bytes.</summary>
public readonly record struct SrStat(long PhysicalSize, long PhysicalUtilisation);

/// <summary>What a scan found: every VDI of the storage and its sizes.</summary>
public sealed record SrScan(IReadOnlyList<VdiInfo> Vdis, SrStat Stat)
{
    /// <summary>The storage keeps no list of its own (dummy SRs): the records stay as they are.</summary>
    public bool KeepsRecords { get; init; }
}

/// <summary>A VDI as the storage knows it.</summary>
public sealed record VdiInfo
{
    public required string Uuid { get; init; }

    /// <summary>Where the driver finds it (for file SRs the uuid, for ISO SRs the file name).</summary>
    public required string Location { get; init; }

    public long VirtualSize { get; init; }

    public long PhysicalUtilisation { get; init; }

    public bool ReadOnly { get; init; }

    /// <summary>A chain node no client uses directly; recorded with managed = false.</summary>
    public bool Hidden { get; init; }

    /// <summary>The node this one is a delta over, kept in sm_config <c>vhd-parent</c>.</summary>
    public string? ParentUuid { get; init; }

    /// <summary>Drivers that name what they find (ISO SRs: the file name); null keeps the record's.</summary>
    public string? NameLabel { get; init; }

    public VdiType Type { get; init; } = VdiType.User;

    /// <summary>Driver-owned sm_config entries beside <c>vhd-parent</c>.</summary>
    public IReadOnlyDictionary<string, string> SmConfig { get; init; } = Empty;

    public static readonly IReadOnlyDictionary<string, string> Empty = new Dictionary<string, string>();
}

/// <summary>What VDI.create asks of the driver; the server chose the uuid.</summary>
public sealed record VdiSpec(string Uuid, long VirtualSize, string NameLabel, VdiType Type, bool ReadOnly, IReadOnlyDictionary<string, string> SmConfig);

/// <summary>
/// What a snapshot or clone did to the chain: the new VDI, the source as it now is, and the new
/// hidden node both sit on, when the driver made one (the SM "double" snapshot shape).
/// </summary>
public sealed record ChainChange(VdiInfo Created, VdiInfo Source, VdiInfo? NewBase);

/// <summary>How a domain reaches the disk: a path and its format (qcow2, raw) for the backend.</summary>
public sealed record VdiAttachment(string Path, string Format, bool ReadOnly);

/// <summary>What one garbage-collection step did.</summary>
public sealed record GcStep(GcStepKind Kind, IReadOnlyList<string> RemovedUuids)
{
    public static readonly GcStep Idle = new(GcStepKind.Idle, []);
}

public enum GcStepKind
{
    /// <summary>Nothing left to collect.</summary>
    Idle,

    /// <summary>Unused hidden nodes were removed.</summary>
    RemovedGarbage,

    /// <summary>A hidden node was merged into its parent and removed.</summary>
    Coalesced,

    /// <summary>A leaf was merged with its only parent, which was removed.</summary>
    LeafCoalesced,

    /// <summary>Work is left but cannot be done now (a VDI in use, no space); try later.</summary>
    Deferred,
}
