using Xapi.Database;
using Xapi.Model;

namespace Xapi.Storage.Service;

/// <summary>
/// The one place where what drivers report becomes database rows: new VDIs, changed sizes and
/// chains, forgotten VDIs, SR sizes. Drivers never write the database themselves.
/// </summary>
public static class StorageRecords
{
    public static readonly DateTime NeverSnapshot = new(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    /// <summary>Name SM gives the hidden nodes that chains share.</summary>
    public const string BaseCopyName = "base copy";

    public static VDIRef Introduce(Transaction tx, SRRef sr, VdiInfo info, Action<VDIValues>? describe = null)
    {
        return tx.CreateVDI(vdi =>
        {
            vdi.Uuid = info.Uuid;
            vdi.NameLabel = info.NameLabel ?? (info.Hidden ? BaseCopyName : "");
            vdi.SR = sr;
            vdi.Type = info.Type;
            vdi.OnBoot = OnBoot.Persist;
            vdi.SnapshotTime = NeverSnapshot;
            vdi.SnapshotOf = VDIRef.Null;
            vdi.Parent = VDIRef.Null;
            vdi.MetadataOfPool = PoolRef.Null;
            Apply(vdi, info);
            describe?.Invoke(vdi);
        });
    }

    /// <summary>Brings a record's storage-owned fields in line with the driver's view.</summary>
    public static void Apply(VDIValues vdi, VdiInfo info)
    {
        vdi.Location = info.Location;
        vdi.VirtualSize = info.VirtualSize;
        vdi.PhysicalUtilisation = info.PhysicalUtilisation;
        vdi.ReadOnly = info.ReadOnly;
        vdi.Managed = !info.Hidden;
        vdi.Missing = false;
        if (info.NameLabel is { } name)
        {
            vdi.NameLabel = name;
        }
        var smConfig = vdi.SmConfig.Without(SmConfig.VhdParent);
        foreach (var (key, value) in info.SmConfig)
        {
            smConfig = smConfig.With(key, value);
        }
        if (info.ParentUuid is { } parent)
        {
            smConfig = smConfig.With(SmConfig.VhdParent, parent);
        }
        vdi.SmConfig = smConfig;
    }

    /// <summary>A record as the driver knows it: what drivers are handed for the VDI they act on.</summary>
    public static VdiInfo InfoOf(VDIRecord vdi) => new()
    {
        Uuid = vdi.Uuid,
        Location = vdi.Location,
        VirtualSize = vdi.VirtualSize,
        PhysicalUtilisation = vdi.PhysicalUtilisation,
        ReadOnly = vdi.ReadOnly,
        Hidden = !vdi.Managed,
        Type = vdi.Type,
        ParentUuid = vdi.SmConfig.TryGetValue(SmConfig.VhdParent, out var parent) ? parent as string : null,
    };

    public static void Update(Transaction tx, VDIRef vdi, VdiInfo info) => tx.Update(vdi, values => Apply(values, info));

    /// <summary>
    /// Makes the SR's VDI records what a scan found: adds what appeared, forgets what is gone,
    /// updates the rest, and sets the SR's sizes. Returns the number of records changed.
    /// </summary>
    public static int Synchronize(Transaction tx, SRRef sr, SrScan scan)
    {
        var changed = 0;
        if (!scan.KeepsRecords)
        {
            var found = scan.Vdis.ToDictionary(v => v.Uuid, StringComparer.Ordinal);
            foreach (var record in tx.All<VDIRecord>().Where(v => v.SR == sr).ToList())
            {
                if (found.Remove(record.Uuid, out var info))
                {
                    if (!Same(record, info))
                    {
                        Update(tx, record.Ref, info);
                        changed++;
                    }
                }
                else
                {
                    Forget(tx, record.Ref);
                    changed++;
                }
            }
            foreach (var info in found.Values)
            {
                if (tx.All<VDIRecord>().Any(v => v.Uuid == info.Uuid))
                {
                    // The uuid belongs to a VDI of another SR: an image copied in behind our back.
                    continue;
                }
                Introduce(tx, sr, info);
                changed++;
            }
        }
        SetSizes(tx, sr, scan.Stat);
        return changed;
    }

    private static bool Same(VDIRecord record, VdiInfo info) =>
        record.Location == info.Location && record.VirtualSize == info.VirtualSize && record.PhysicalUtilisation == info.PhysicalUtilisation
        && record.ReadOnly == info.ReadOnly && record.Managed == !info.Hidden && !record.Missing
        && (record.SmConfig.TryGetValue(SmConfig.VhdParent, out var parent) ? (string?)parent : null) == info.ParentUuid
        && (info.NameLabel is null || info.NameLabel == record.NameLabel);

    /// <summary>Removes a VDI's record; its VBDs go too (CD drives are emptied instead, as on real hosts).</summary>
    public static void Forget(Transaction tx, VDIRef vdi)
    {
        foreach (var vbd in tx.All<VBDRecord>().Where(b => b.VDI == vdi).ToList())
        {
            if (vbd.Type == VbdType.CD)
            {
                tx.Update(vbd.Ref, values =>
                {
                    values.VDI = VDIRef.Null;
                    values.Empty = true;
                });
            }
            else
            {
                tx.Delete(vbd.Ref);
            }
        }
        foreach (var vm in tx.All<VMRecord>().Where(v => v.SuspendVDI == vdi).ToList())
        {
            tx.Update(vm.Ref, values => values.SuspendVDI = VDIRef.Null);
        }
        foreach (var other in tx.All<VDIRecord>().Where(v => v.SnapshotOf == vdi).ToList())
        {
            tx.Update(other.Ref, values => values.SnapshotOf = VDIRef.Null);
        }
        tx.Delete(vdi);
    }

    /// <summary>After VDIs come or go: the physical sizes stay as the driver last said, the virtual allocation is recomputed.</summary>
    public static void RecomputeAllocation(Transaction tx, SRRef sr)
    {
        var record = tx.Get(sr);
        SetSizes(tx, sr, new SrStat(record.PhysicalSize, record.PhysicalUtilisation));
    }

    /// <summary>
    /// The SR's sizes: physical ones from the driver, and the virtual allocation as the real
    /// server computes it, the sum of its visible VDIs' virtual sizes.
    /// </summary>
    public static void SetSizes(Transaction tx, SRRef sr, SrStat stat)
    {
        var allocation = tx.All<VDIRecord>().Where(v => v.SR == sr && v.Managed).Sum(v => v.VirtualSize);
        tx.Update(sr, values =>
        {
            values.PhysicalSize = stat.PhysicalSize;
            values.PhysicalUtilisation = stat.PhysicalUtilisation;
            values.VirtualAllocation = allocation;
        });
        StorageAllowedOperations.Refresh(tx, sr);
    }
}
