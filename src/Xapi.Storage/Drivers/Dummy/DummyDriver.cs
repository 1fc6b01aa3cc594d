using Xapi.Storage.DataPath;

namespace Xapi.Storage.Drivers.Dummy;

/// <summary>
/// Stores nothing (SM's DummySR): VDIs exist only as records, read as zeros and drop writes.
/// For tests and for VMs that need a disk record but no data.
/// </summary>
public sealed class DummyDriver : SrDriver
{
    /// <summary>The size a dummy SR reports, as SM's does.</summary>
    public const long ReportedSize = 2_000_000_000_000;

    public override SmDescription Description { get; } = new(
        "dummy", "dummy", "SR plugin which stores nothing, for testing", "xapi-dotnet", "1.1",
        [
            new(SmFeatures.SrProbe), new(SmFeatures.VdiActivate), new(SmFeatures.VdiAttach), new(SmFeatures.VdiClone),
            new(SmFeatures.VdiCreate), new(SmFeatures.VdiDeactivate), new(SmFeatures.VdiDelete), new(SmFeatures.VdiDetach),
            new(SmFeatures.VdiIntroduce), new(SmFeatures.VdiMirror), new(SmFeatures.VdiResize), new(SmFeatures.VdiSnapshot),
        ],
        []);

    public override ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyDictionary<string, string>?>(null);

    public override ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public override ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken) =>
        ValueTask.FromResult($"<?xml version=\"1.0\" ?>\n<SRlist>\n\t<SR>\n\t\t<UUID>{Guid.NewGuid():D}</UUID>\n\t\t<Size>1024</Size>\n\t</SR>\n</SRlist>\n");

    /// <summary>The records are the truth for a dummy SR: a scan finds nothing to add or remove.</summary>
    public override ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new SrScan([], new SrStat(ReportedSize, 0)) { KeepsRecords = true });

    public override ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new VdiInfo { Uuid = spec.Uuid, Location = spec.Uuid, VirtualSize = spec.VirtualSize, PhysicalUtilisation = spec.VirtualSize, ReadOnly = spec.ReadOnly, Type = spec.Type });

    public override ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public override ValueTask<ChainChange> SnapshotVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new ChainChange(vdi with { Uuid = newUuid, Location = newUuid, PhysicalUtilisation = 0, ReadOnly = true }, vdi, null));

    public override ValueTask<ChainChange> CloneVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new ChainChange(vdi with { Uuid = newUuid, Location = newUuid, PhysicalUtilisation = 0, ReadOnly = false }, vdi, null));

    public override ValueTask<VdiInfo> ResizeVdiAsync(SrContext sr, VdiInfo vdi, long newSize, CancellationToken cancellationToken) =>
        ValueTask.FromResult(vdi with { VirtualSize = newSize });

    public override ValueTask<VdiInfo> IntroduceVdiAsync(SrContext sr, string uuid, string location, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new VdiInfo { Uuid = uuid, Location = location });

    public override ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new VdiAttachment("/dev/null", "raw", !writable));

    public override ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IDiskImage>(new ZeroImage(vdi.VirtualSize, writable));
}
