using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.DataPath;
using Xapi.Storage.Service;

namespace Xapi.Server.Api;

public sealed partial class VDIApi
{
    /// <summary>
    /// Copies a VDI's data into a new VDI of <paramref name="sr"/> (or into <paramref name="intoVdi"/>),
    /// only the extents that hold data, reporting progress on the task; cancelled or failed, the VDI
    /// it created is destroyed again.
    /// </summary>
    [RunsAs<VdiOperations>(VdiOperations.Copy)]
    public async ValueTask<VDIRef> Copy(CallContext context, VDIRef vdi, SRRef sr, VDIRef baseVdi, VDIRef intoVdi)
    {
        var snapshot = context.Snapshot;
        var source = snapshot.Get(vdi);
        AssertManaged(source);
        var (sourceDriver, sourceContext) = Plugged(snapshot, source.SR);
        var created = false;
        VDIRef target;
        if (!intoVdi.IsNull && snapshot.TryGet(intoVdi, out var into))
        {
            target = intoVdi;
            if (into.ReadOnly)
            {
                throw XenApiErrors.VdiReadonly(intoVdi.Value);
            }
            if (into.VirtualSize < source.VirtualSize)
            {
                throw XenApiErrors.VdiTooSmall(intoVdi.Value, source.VirtualSize.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }
        else
        {
            snapshot.Get(sr);
            // The values in their stored (wire) form, as a client's VDI.create passes them.
            var values = ImplicitMessages.ConstructorValues(VDIRef.Class, ValueMap.FromPairs([
                new(VDIRef.Class.Fields[VDIFields.SR].Name, sr.Value),
                new(VDIRef.Class.Fields[VDIFields.VirtualSize].Name, source.VirtualSize),
                new(VDIRef.Class.Fields[VDIFields.Type].Name, source.Type.ToWire()),
                new(VDIRef.Class.Fields[VDIFields.Sharable].Name, source.Sharable),
                new(VDIRef.Class.Fields[VDIFields.ReadOnly].Name, false),
                new(VDIRef.Class.Fields[VDIFields.OtherConfig].Name, source.OtherConfig),
            ]));
            var described = new VDIValues(values);
            described.NameLabel = source.NameLabel;
            described.NameDescription = source.NameDescription;
            described.Tags = source.Tags;
            target = new VDIRef(await ((IObjectLifecycle)this).CreateAsync(context, values).ConfigureAwait(false));
            created = true;
        }
        try
        {
            await context.SettledAsync().ConfigureAwait(false);
            var targetRecord = context.Snapshot.Get(target);
            var (targetDriver, targetContext) = Plugged(context.Snapshot, targetRecord.SR);
            IReadOnlyList<DiskExtent>? only = null;
            if (!baseVdi.IsNull && snapshot.TryGet(baseVdi, out var baseRecord) && baseRecord.SR == source.SR)
            {
                only = await sourceDriver.ChangedExtentsAsync(sourceContext, StorageRecords.InfoOf(source), StorageRecords.InfoOf(baseRecord), context.Cancellation).ConfigureAwait(false);
            }
            await using var reader = await sourceDriver.OpenAsync(sourceContext, StorageRecords.InfoOf(source), writable: false, context.Cancellation).ConfigureAwait(false);
            await using var writer = await targetDriver.OpenAsync(targetContext, StorageRecords.InfoOf(targetRecord), writable: true, context.Cancellation).ConfigureAwait(false);
            await DiskCopy.CopyAsync(reader, writer, only, targetIsEmpty: created, context.ReportProgress, context.Cancellation).ConfigureAwait(false);
        }
        catch (SmException e)
        {
            await DiscardAsync(context, target, created).ConfigureAwait(false);
            throw StorageManager.ToXenApi(e, source.SR);
        }
        catch
        {
            await DiscardAsync(context, target, created).ConfigureAwait(false);
            throw;
        }
        await storage.ScanAsync(context.Snapshot.Get(target).SR, CancellationToken.None).ConfigureAwait(false);
        return target;
    }

    /// <summary>Destroys the VDI the copy made; not cancellable, since a cancelled copy is what it cleans up after.</summary>
    private async Task DiscardAsync(CallContext context, VDIRef target, bool created)
    {
        if (created)
        {
            await context.Database.WhenVisibleAsync(context.Database.CommittedGeneration, CancellationToken.None).ConfigureAwait(false);
            await DestroyAsync(context, target, CancellationToken.None).ConfigureAwait(false);
        }
    }
}
