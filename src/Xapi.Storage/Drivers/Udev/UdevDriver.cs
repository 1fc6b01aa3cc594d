namespace Xapi.Storage.Drivers.Udev;

/// <summary>
/// Removable devices (SM's udevSR): VDIs are device nodes introduced as they appear. This host
/// has no hot-plug hook yet, so the SR stays empty; it exists so clients find the "Removable
/// storage" and "DVD drives" SRs every host has.
/// </summary>
public sealed class UdevDriver : SrDriver
{
    public override SmDescription Description { get; } = new(
        "udev", "udev", "SR plugin which represents removable devices as VDIs", "xapi-dotnet", "1.1",
        [new(SmFeatures.SrUpdate), new(SmFeatures.VdiAttach), new(SmFeatures.VdiDetach), new(SmFeatures.VdiIntroduce), new(SmFeatures.VdiUpdate)],
        [new("location", "path to mount (required) (e.g. server:/path)")]);

    public override ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyDictionary<string, string>?>(null);

    public override ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public override ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new SrScan([], new SrStat(0, 0)) { KeepsRecords = true });
}
