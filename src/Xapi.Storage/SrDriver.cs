using Xapi.Storage.DataPath;

namespace Xapi.Storage;

/// <summary>
/// The base of every driver: each operation it does not override is refused as not supported,
/// as SMAPIv1's base SR and VDI classes do, so a driver states only what it can.
/// </summary>
public abstract class SrDriver : ISrDriver
{
    public abstract SmDescription Description { get; }

    public virtual ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken) => throw SmException.Unimplemented("sr_create");

    public virtual ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken) => throw SmException.Unimplemented("sr_delete");

    public virtual ValueTask AttachAsync(SrContext sr, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public virtual ValueTask DetachAsync(SrContext sr, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public virtual ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken) => throw SmException.Unimplemented("sr_probe");

    public virtual ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken) => throw SmException.Unimplemented("sr_scan");

    public virtual async ValueTask<SrStat> StatAsync(SrContext sr, CancellationToken cancellationToken) =>
        (await ScanAsync(sr, cancellationToken).ConfigureAwait(false)).Stat;

    public virtual ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_create");

    public virtual ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_delete");

    public virtual ValueTask<ChainChange> SnapshotVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_snapshot");

    public virtual ValueTask<ChainChange> CloneVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_clone");

    public virtual ValueTask<VdiInfo> ResizeVdiAsync(SrContext sr, VdiInfo vdi, long newSize, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_resize");

    public virtual ValueTask<VdiInfo> IntroduceVdiAsync(SrContext sr, string uuid, string location, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_introduce");

    public virtual ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_attach");

    public virtual ValueTask DetachVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public virtual ValueTask ActivateVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public virtual ValueTask DeactivateVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public virtual ValueTask ComposeVdiAsync(SrContext sr, VdiInfo parent, VdiInfo child, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_compose");

    public virtual ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) => throw SmException.Unimplemented("vdi_attach");

    public virtual ValueTask<IReadOnlyList<DiskExtent>?> ChangedExtentsAsync(SrContext sr, VdiInfo vdi, VdiInfo baseVdi, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<DiskExtent>?>(null);

    public virtual ValueTask<GcStep> CollectGarbageAsync(SrContext sr, Func<string, bool> inUse, CancellationToken cancellationToken) => ValueTask.FromResult(GcStep.Idle);
}
