using Xapi.Database;
using Xapi.Model;

namespace Xapi.Storage.Service;

/// <summary>
/// SR and VDI <c>allowed_operations</c> as real hosts compute them (xapi_sr_operations.ml,
/// xapi_vdi.ml): the operations the SR type's driver can do, less those the object's state
/// forbids; none but <c>plug</c> while an SR operation runs, none while a VDI operation (other
/// than a copy) runs, and only the live ones while a VBD has the VDI attached.
/// </summary>
public static class StorageAllowedOperations
{
    private static readonly (StorageOperations Operation, string? Feature)[] SrUniverse =
    [
        (StorageOperations.Scan, null), (StorageOperations.Destroy, null), (StorageOperations.Forget, null),
        (StorageOperations.Plug, null), (StorageOperations.Unplug, null), (StorageOperations.Update, SmFeatures.SrUpdate),
        (StorageOperations.VdiCreate, SmFeatures.VdiCreate), (StorageOperations.VdiIntroduce, SmFeatures.VdiIntroduce),
        (StorageOperations.VdiDestroy, SmFeatures.VdiDelete), (StorageOperations.VdiResize, SmFeatures.VdiResize),
        // Real hosts never gate clone: they fall back to create and copy.
        (StorageOperations.VdiClone, null), (StorageOperations.VdiSnapshot, SmFeatures.VdiSnapshot),
        (StorageOperations.VdiMirror, SmFeatures.VdiMirror), (StorageOperations.VdiEnableCbt, SmFeatures.VdiConfigCbt),
        (StorageOperations.VdiDisableCbt, SmFeatures.VdiConfigCbt), (StorageOperations.VdiDataDestroy, SmFeatures.VdiConfigCbt),
        (StorageOperations.VdiListChangedBlocks, SmFeatures.VdiConfigCbt), (StorageOperations.VdiSetOnBoot, SmFeatures.VdiResetOnBoot),
        (StorageOperations.VdiRevert, SmFeatures.VdiRevert), (StorageOperations.PbdCreate, null), (StorageOperations.PbdDestroy, null),
    ];

    private static readonly (VdiOperations Operation, string? Feature, bool Live)[] VdiUniverse =
    [
        (VdiOperations.Clone, SmFeatures.VdiClone, true), (VdiOperations.Copy, null, false), (VdiOperations.Resize, SmFeatures.VdiResize, false),
        (VdiOperations.ResizeOnline, SmFeatures.VdiResizeOnline, true), (VdiOperations.Snapshot, SmFeatures.VdiSnapshot, true),
        (VdiOperations.Destroy, SmFeatures.VdiDelete, false), (VdiOperations.Forget, null, false), (VdiOperations.Update, SmFeatures.VdiUpdate, false),
        (VdiOperations.GenerateConfig, SmFeatures.VdiGenerateConfig, false),
    ];

    private static IReadOnlyList<string> FeaturesOf(IRowReader db, string type)
    {
        foreach (var sm in db.All<SMRecord>())
        {
            if (sm.Type == type)
            {
                return sm.Capabilities;
            }
        }
        return [];
    }

    public static IReadOnlyList<object?> ForSr(IRowReader db, SRRef sr, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress)
    {
        var record = new SRValues(values.ToArray());
        var plug = StorageOperations.Plug.ToWire();
        if (inProgress.Count > 0)
        {
            return inProgress.All(op => op == plug) ? [plug] : [];
        }
        var features = FeaturesOf(db, record.Type);
        var pbds = db.All<PBDRecord>().Where(p => p.SR == sr).ToList();
        var plugged = pbds.Any(p => p.CurrentlyAttached);
        var holdsDisks = db.All<VDIRecord>().Any(v => v.SR == sr && v.Managed && v.Type != VdiType.Rrd);
        var allowed = new List<object?>();
        foreach (var (operation, feature) in SrUniverse)
        {
            if (feature is not null && !features.Contains(feature))
            {
                continue;
            }
            var refused = operation switch
            {
                StorageOperations.Destroy => plugged || pbds.Count == 0 || holdsDisks,
                StorageOperations.Forget => plugged,
                _ => false,
            };
            if (!refused)
            {
                allowed.Add(operation.ToWire());
            }
        }
        return allowed;
    }

    public static IReadOnlyList<object?> ForVdi(IRowReader db, VDIRef vdi, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress)
    {
        var record = new VDIValues(values.ToArray());
        var copy = VdiOperations.Copy.ToWire();
        if (inProgress.Any(op => op != copy) || !db.TryGet(record.SR, out var sr))
        {
            return [];
        }
        var features = FeaturesOf(db, sr.Type);
        var attached = db.All<VBDRecord>().Where(b => b.VDI == vdi && b.CurrentlyAttached).ToList();
        var attachedWritable = attached.Any(b => b.Mode == VbdMode.RW);
        var allowed = new List<object?>();
        foreach (var (operation, feature, live) in VdiUniverse)
        {
            if (feature is not null && !features.Contains(feature))
            {
                continue;
            }
            if (attached.Count > 0 && !live && !(operation == VdiOperations.Copy && !attachedWritable))
            {
                continue;
            }
            allowed.Add(operation.ToWire());
        }
        return allowed;
    }

    /// <summary>Recomputes the idle operations of an SR and its VDIs after storage changed them.</summary>
    public static void Refresh(Transaction tx, SRRef sr)
    {
        if (!tx.TryGet(sr, out var record))
        {
            return;
        }
        if (record.CurrentOperations.Count == 0)
        {
            var values = tx.GetRowValues(SRRef.Class, sr.Value);
            var allowed = ForSr(tx, sr, values, []);
            tx.Update(sr, s => s.AllowedOperations = allowed.Select(o => StorageOperationsWire.Parse((string)o!)).ToArray());
        }
        foreach (var vdi in tx.All<VDIRecord>().Where(v => v.SR == sr && v.CurrentOperations.Count == 0).ToList())
        {
            var allowed = ForVdi(tx, vdi.Ref, tx.GetRowValues(VDIRef.Class, vdi.Ref.Value), []);
            tx.Update(vdi.Ref, v => v.AllowedOperations = allowed.Select(o => VdiOperationsWire.Parse((string)o!)).ToArray());
        }
    }
}
