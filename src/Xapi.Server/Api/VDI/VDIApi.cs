using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.DataPath;
using Xapi.Storage.Service;

namespace Xapi.Server.Api;

/// <summary>
/// Virtual disks: each message checks what real hosts check (the SR plugged here, the VDI
/// managed and not in use, the driver able to), asks the SR's driver, then records what the
/// driver reports through <see cref="StorageRecords"/>.
/// </summary>
public sealed partial class VDIApi(StorageManager storage, TimeProvider time) : IVDIApi<CallContext>, IObjectLifecycle
{
    // The only sm_config keys a client's VDI.create passes to the driver (as SM's VDI.py keeps them).
    private static readonly string[] ClientSmConfigKeys = ["base_mirror", "key_hash"];

    // other_config key real hosts give snapshots: the identity of the data they hold.
    private const string ContentIdKey = "content_id";

    ClassMeta IObjectLifecycle.Class => VDIRef.Class;

    // A disk is made and destroyed by a host its SR is plugged on.
    HostSelection? IObjectLifecycle.RunsOn => HostSelection.StorageHost;

    async ValueTask<string> IObjectLifecycle.CreateAsync(CallContext context, object?[] values)
    {
        var vdi = new VDIValues(values);
        var snapshot = context.Snapshot;
        var sr = vdi.SR;
        snapshot.Get(sr);
        if (vdi.Type == VdiType.CbtMetadata)
        {
            throw XenApiErrors.VdiIncompatibleType("", VdiType.CbtMetadata.ToWire());
        }
        var smConfig = SmConfig.Strings(vdi.SmConfig).Where(p => ClientSmConfigKeys.Contains(p.Key)).ToDictionary();
        var spec = new VdiSpec(Guid.NewGuid().ToString("D"), vdi.VirtualSize, vdi.NameLabel, vdi.Type, vdi.ReadOnly, smConfig);
        var created = await storage.CreateVdiAsync(sr, spec, record =>
        {
            record.NameDescription = vdi.NameDescription;
            record.Sharable = vdi.Sharable;
            record.OtherConfig = vdi.OtherConfig;
            record.XenstoreData = vdi.XenstoreData;
            record.Tags = vdi.Tags;
        }, context.Cancellation).ConfigureAwait(false);
        return created.Value;
    }

    ValueTask IObjectLifecycle.DestroyAsync(CallContext context, string reference) => DestroyAsync(context, new VDIRef(reference), context.Cancellation);

    private async ValueTask DestroyAsync(CallContext context, VDIRef self, CancellationToken cancellationToken)
    {
        var (vdi, driver, driverContext) = Offline(context, self, VdiOperations.Destroy, SmFeatures.VdiDelete);
        await storage.RunAsync(vdi.SR, () => driver.DeleteVdiAsync(driverContext, StorageRecords.InfoOf(vdi), cancellationToken).AsTask()).ConfigureAwait(false);
        context.Write(tx =>
        {
            StorageRecords.Forget(tx, self);
            StorageRecords.RecomputeAllocation(tx, vdi.SR);
        });
        storage.RequestCollection(vdi.SR);
    }

    [RunsOn(HostSelection.StorageHost)]
    [RunsAs<VdiOperations>(VdiOperations.Snapshot)]
    public ValueTask<VDIRef> Snapshot(CallContext context, VDIRef vdi, ValueMap driverParams) => BranchAsync(context, vdi, isSnapshot: true);

    [RunsOn(HostSelection.StorageHost)]
    [RunsAs<VdiOperations>(VdiOperations.Clone)]
    public ValueTask<VDIRef> Clone(CallContext context, VDIRef vdi, ValueMap driverParams) => BranchAsync(context, vdi, isSnapshot: false);

    private async ValueTask<VDIRef> BranchAsync(CallContext context, VDIRef self, bool isSnapshot)
    {
        var snapshot = context.Snapshot;
        var vdi = snapshot.Get(self);
        var (driver, driverContext) = Plugged(snapshot, vdi.SR);
        AssertManaged(vdi);
        if (isSnapshot && vdi.Sharable)
        {
            throw XenApiErrors.VdiIsSharable(self.Value);
        }
        if (!driver.Description.Has(isSnapshot ? SmFeatures.VdiSnapshot : SmFeatures.VdiClone))
        {
            throw isSnapshot ? XenApiErrors.UnimplementedInSmBackend(vdi.SR.Value) : XenApiErrors.SrOperationNotSupported(vdi.SR.Value);
        }
        var newUuid = Guid.NewGuid().ToString("D");
        var change = await storage.RunAsync(vdi.SR, () => (isSnapshot
            ? driver.SnapshotVdiAsync(driverContext, StorageRecords.InfoOf(vdi), newUuid, context.Cancellation)
            : driver.CloneVdiAsync(driverContext, StorageRecords.InfoOf(vdi), newUuid, context.Cancellation)).AsTask()).ConfigureAwait(false);
        var now = Whole(time.GetUtcNow().UtcDateTime);
        return context.Write(tx =>
        {
            if (change.NewBase is { } newBase)
            {
                StorageRecords.Introduce(tx, vdi.SR, newBase);
            }
            StorageRecords.Update(tx, self, change.Source);
            var contentId = vdi.OtherConfig.TryGetValue(ContentIdKey, out var id) && id is string existing ? existing : Guid.NewGuid().ToString("D");
            var created = StorageRecords.Introduce(tx, vdi.SR, change.Created, record =>
            {
                record.NameLabel = vdi.NameLabel;
                record.NameDescription = vdi.NameDescription;
                record.Type = vdi.Type;
                record.Sharable = vdi.Sharable;
                record.OtherConfig = isSnapshot ? vdi.OtherConfig.With(ContentIdKey, contentId) : vdi.OtherConfig;
                record.XenstoreData = vdi.XenstoreData;
                record.OnBoot = vdi.OnBoot;
                record.AllowCaching = vdi.AllowCaching;
                record.Tags = vdi.Tags;
                record.SnapshotTime = now;
                record.IsASnapshot = isSnapshot;
                record.SnapshotOf = isSnapshot ? self : VDIRef.Null;
            });
            StorageRecords.RecomputeAllocation(tx, vdi.SR);
            return created;
        });
    }

    [RunsOn(HostSelection.StorageHost)]
    [RunsAs<VdiOperations>(VdiOperations.Resize)]
    public async ValueTask Resize(CallContext context, VDIRef vdi, long size)
    {
        var (record, driver, driverContext) = Offline(context, vdi, VdiOperations.Resize, SmFeatures.VdiResize);
        var info = await storage.RunAsync(record.SR, () => driver.ResizeVdiAsync(driverContext, StorageRecords.InfoOf(record), size, context.Cancellation).AsTask()).ConfigureAwait(false);
        context.Write(tx =>
        {
            StorageRecords.Update(tx, vdi, info);
            StorageRecords.RecomputeAllocation(tx, record.SR);
        });
    }

    /// <summary>No driver here resizes a disk a running VM uses: refused as real hosts refuse it for these SR types.</summary>
    [RunsAs<VdiOperations>(VdiOperations.ResizeOnline)]
    public ValueTask ResizeOnline(CallContext context, VDIRef vdi, long size)
    {
        var record = context.Snapshot.Get(vdi);
        Require(storage.DriverOf(context.Snapshot.Get(record.SR)), SmFeatures.VdiResizeOnline, record.SR);
        return Resize(context, vdi, size);
    }

    public async ValueTask<VDIRef> Introduce(CallContext context, string uuid, string nameLabel, string nameDescription, SRRef sr, VdiType type, bool sharable, bool readOnly,
        ValueMap otherConfig, string location, ValueMap xenstoreData, ValueMap smConfig, bool managed, long virtualSize, long physicalUtilisation, PoolRef metadataOfPool,
        bool isASnapshot, DateTime snapshotTime, VDIRef snapshotOf)
    {
        var snapshot = context.Snapshot;
        snapshot.Get(sr);
        var (driver, driverContext) = Plugged(snapshot, sr);
        Require(driver, SmFeatures.VdiIntroduce, sr);
        AssertLocationUnique(snapshot, sr, location, uuid);
        var id = uuid.Length == 0 ? Guid.NewGuid().ToString("D") : uuid;
        if (!SrDirectory.IsUuid(id))
        {
            throw XenApiErrors.UuidInvalid(VDIRef.Class.Name, uuid);
        }
        var info = await storage.RunAsync(sr, () => driver.IntroduceVdiAsync(driverContext, id, location, context.Cancellation).AsTask()).ConfigureAwait(false);
        return context.Write(tx => StorageRecords.Introduce(tx, sr, info, record =>
        {
            record.OtherConfig = otherConfig;
            record.XenstoreData = xenstoreData;
            record.Sharable = sharable;
            record.Type = type;
            if (nameLabel.Length > 0)
            {
                record.NameLabel = nameLabel;
            }
            if (nameDescription.Length > 0)
            {
                record.NameDescription = nameDescription;
            }
        }));
    }

    public ValueTask<VDIRef> DbIntroduce(CallContext context, string uuid, string nameLabel, string nameDescription, SRRef sr, VdiType type, bool sharable, bool readOnly,
        ValueMap otherConfig, string location, ValueMap xenstoreData, ValueMap smConfig, bool managed, long virtualSize, long physicalUtilisation, PoolRef metadataOfPool,
        bool isASnapshot, DateTime snapshotTime, VDIRef snapshotOf)
    {
        if (!SrDirectory.IsUuid(uuid))
        {
            throw XenApiErrors.UuidInvalid(VDIRef.Class.Name, uuid);
        }
        return ValueTask.FromResult(context.Write(tx =>
        {
            tx.Get(sr);
            AssertLocationUnique(tx, sr, location, uuid);
            return tx.CreateVDI(vdi =>
            {
                vdi.Uuid = uuid;
                vdi.NameLabel = nameLabel;
                vdi.NameDescription = nameDescription;
                vdi.SR = sr;
                vdi.Type = type;
                vdi.Sharable = sharable;
                vdi.ReadOnly = readOnly;
                vdi.OtherConfig = otherConfig;
                vdi.Location = location;
                vdi.XenstoreData = xenstoreData;
                vdi.SmConfig = smConfig;
                vdi.Managed = managed;
                vdi.VirtualSize = virtualSize;
                vdi.PhysicalUtilisation = physicalUtilisation;
                vdi.MetadataOfPool = metadataOfPool;
                vdi.IsASnapshot = isASnapshot;
                vdi.SnapshotTime = snapshotTime;
                vdi.SnapshotOf = snapshotOf;
                vdi.Parent = VDIRef.Null;
                vdi.OnBoot = OnBoot.Persist;
            });
        }));
    }

    public ValueTask DbForget(CallContext context, VDIRef vdi)
    {
        context.Write(tx =>
        {
            tx.Get(vdi);
            StorageRecords.Forget(tx, vdi);
        });
        return ValueTask.CompletedTask;
    }

    [RunsAs<VdiOperations>(VdiOperations.Forget)]
    public ValueTask Forget(CallContext context, VDIRef vdi)
    {
        context.Write(tx => StorageRecords.Forget(tx, vdi));
        return ValueTask.CompletedTask;
    }

    [RunsOn(HostSelection.StorageHost)]
    [RunsAs<VdiOperations>(VdiOperations.Update)]
    public async ValueTask Update(CallContext context, VDIRef vdi)
    {
        var record = context.Snapshot.Get(vdi);
        await storage.ScanAsync(record.SR, context.Cancellation).ConfigureAwait(false);
    }

    /// <summary>No driver here keeps changed-block tracking: the CBT messages are refused as for an SR without VDI_CONFIG_CBT.</summary>
    public ValueTask<string> ListChangedBlocks(CallContext context, VDIRef vdiFrom, VDIRef vdiTo)
    {
        var snapshot = context.Snapshot;
        snapshot.Get(vdiFrom);
        throw XenApiErrors.SrOperationNotSupported(snapshot.Get(vdiTo).SR.Value);
    }

    public ValueTask EnableCbt(CallContext context, VDIRef self) => throw XenApiErrors.SrOperationNotSupported(context.Snapshot.Get(self).SR.Value);

    public ValueTask DisableCbt(CallContext context, VDIRef self) => throw XenApiErrors.SrOperationNotSupported(context.Snapshot.Get(self).SR.Value);

    public ValueTask DataDestroy(CallContext context, VDIRef self)
    {
        var vdi = context.Snapshot.Get(self);
        if (!vdi.IsASnapshot)
        {
            throw XenApiErrors.OperationNotAllowed($"VDI is not a snapshot: {self.Value}");
        }
        throw XenApiErrors.VdiNoCbtMetadata(self.Value);
    }

    /// <summary>The checks of an operation that needs the VDI detached: SR plugged here, VDI managed and not attached, driver able to.</summary>
    private (VDIRecord Vdi, ISrDriver Driver, SrContext Context) Offline(CallContext context, VDIRef self, VdiOperations operation, string feature)
    {
        var snapshot = context.Snapshot;
        var vdi = snapshot.Get(self);
        var (driver, driverContext) = Plugged(snapshot, vdi.SR);
        AssertManaged(vdi);
        AssertNotAttached(snapshot, self, operation);
        Require(driver, feature, vdi.SR);
        return (vdi, driver, driverContext);
    }

    private (ISrDriver Driver, SrContext Context) Plugged(IRowReader db, SRRef sr) =>
        (storage.DriverOf(db.Get(sr)), storage.PluggedContext(db, sr));

    private static void Require(ISrDriver driver, string feature, SRRef sr)
    {
        if (!driver.Description.Has(feature))
        {
            throw XenApiErrors.SrOperationNotSupported(sr.Value);
        }
    }

    private static void AssertManaged(VDIRecord vdi)
    {
        if (!vdi.Managed)
        {
            throw XenApiErrors.VdiNotManaged(vdi.Ref.Value);
        }
    }

    /// <summary>VDI_IN_USE [vdi; op] while a VBD has it attached, as real hosts check.</summary>
    internal static void AssertNotAttached(IRowReader db, VDIRef vdi, VdiOperations operation)
    {
        foreach (var vbd in db.All<VBDRecord>())
        {
            if (vbd.VDI == vdi && vbd.CurrentlyAttached)
            {
                throw XenApiErrors.VdiInUse(vdi.Value, operation.ToWire());
            }
        }
    }

    private static void AssertLocationUnique(IRowReader db, SRRef sr, string location, string uuid)
    {
        foreach (var other in db.All<VDIRecord>())
        {
            if (other.SR == sr && other.Location == location && other.Uuid != uuid)
            {
                throw XenApiErrors.LocationNotUnique(sr.Value, location);
            }
        }
    }

    private static DateTime Whole(DateTime value) => new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
