using System.Globalization;
using System.Security.Cryptography;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.DataPath;

namespace Xapi.Server.Api;

/// <summary>
/// Clone and copy (xapi_vm.ml, xapi_vm_clone.ml), and the record copy they share with snapshot and
/// checkpoint: the disks are branched or copied first through the storage layer, each registered as
/// its VDI's operation, then the new VM, its metrics and devices are written in one transaction, so
/// a client never sees half a VM. Any failure destroys the disks made so far.
/// </summary>
public sealed partial class VMApi
{
    // other_config keys the copy drops or adds (xapi_globs.ml).
    private const string XensourceInternalKey = "xensource_internal";
    private const string BaseTemplateNameKey = "base_template_name";

    // VBD other_config key that makes a disk belong to its VM (constants.ml): the copy's disks go with the copy.
    private const string OwnerKey = "owner";

    // snapshot_info keys and value (xapi_vm_clone.ml); the state is spelled as the API spells it.
    private const string PowerStateAtSnapshotKey = "power-state-at-snapshot";
    private const string DiskSnapshotTypeKey = "disk-snapshot-type";
    private const string CrashConsistent = "crash_consistent";

    // The driver parameter storage backends get to tell branches of one operation apart (constants.ml).
    private const string EpochHintKey = "epochhint";

    // An SR of this content type holds CD images, which are never copied.
    private const string IsoContentType = "iso";

    private enum DiskOperation
    {
        Clone,
        Copy,
        Snapshot,
        Checkpoint,
    }

    [RunsAs<VmOperations>(VmOperations.Clone)]
    public async ValueTask<VMRef> Clone(CallContext context, VMRef vm, string newName)
    {
        var created = await CopyVmAsync(context, vm, newName, DiskOperation.Clone, SRRef.Null, [], null);
        await HaltCopyOfSnapshotAsync(context, vm, created);
        return created;
    }

    [RunsAs<VmOperations>(VmOperations.Copy)]
    public async ValueTask<VMRef> Copy(CallContext context, VMRef vm, string newName, SRRef sr)
    {
        // A missing SR is not an error: each disk then goes to its own SR. An ISO SR is.
        var target = SRRef.Null;
        if (!sr.IsNull && context.Snapshot.TryGet(sr, out var record))
        {
            if (record.ContentType == IsoContentType)
            {
                throw XenApiErrors.OperationNotAllowed("Cannot copy a VM's disks to an ISO SR");
            }
            target = sr;
        }
        var created = await CopyVmAsync(context, vm, newName, DiskOperation.Copy, target, [], null);
        await HaltCopyOfSnapshotAsync(context, vm, created);
        return created;
    }

    /// <summary>A copy of a checkpoint would come out suspended: real hosts shut it down at once.</summary>
    private async ValueTask HaltCopyOfSnapshotAsync(CallContext context, VMRef source, VMRef created)
    {
        var snapshot = context.Snapshot;
        if (snapshot.Get(source).IsASnapshot && snapshot.Get(created).PowerState != VmPowerState.Halted)
        {
            await DiscardSuspendImageAsync(context, created);
        }
    }

    /// <summary>
    /// xapi_vm_clone.clone: branches or copies the disks, then writes the new VM with copies of the
    /// source's metrics, VBDs and VIFs. <paramref name="stateAtSnapshot"/> is what snapshot_info
    /// records when the source was suspended for a checkpoint.
    /// </summary>
    private async ValueTask<VMRef> CopyVmAsync(CallContext context, VMRef vm, string newName, DiskOperation operation, SRRef copyTo,
        IReadOnlyCollection<VDIRef> ignoreVdis, VmPowerState? stateAtSnapshot)
    {
        var snapshot = context.Snapshot;
        var source = snapshot.Get(vm);
        var isSnapshot = operation is DiskOperation.Snapshot or DiskOperation.Checkpoint;
        var newState = (operation, source.PowerState) switch
        {
            (DiskOperation.Checkpoint, VmPowerState.Running or VmPowerState.Suspended) => VmPowerState.Suspended,
            (DiskOperation.Clone or DiskOperation.Copy, VmPowerState.Suspended) => VmPowerState.Suspended,
            _ => VmPowerState.Halted,
        };
        var vbds = source.VBDs.Where(snapshot.Exists).Select(snapshot.Get)
            .Where(b => !isSnapshot || b.Empty || !ignoreVdis.Contains(b.VDI)).ToList();
        var made = new List<VDIRef>();
        try
        {
            var disks = await CopyDisksAsync(context, vbds, operation, copyTo, made);
            var suspendImage = VDIRef.Null;
            if (operation != DiskOperation.Snapshot && !source.SuspendVDI.IsNull && context.Snapshot.Exists(source.SuspendVDI))
            {
                suspendImage = await CopyDiskAsync(context, source.SuspendVDI, operation, copyTo, null);
                made.Add(suspendImage);
            }
            var now = WholeSeconds(time.GetUtcNow().UtcDateTime);
            // The source as it is once its disks are branched: what a revert brings back.
            var metadata = isSnapshot ? XmlRpcWriter.ValueFragment(context.Snapshot.ToRecord(context.Snapshot.Get(VMRef.Class, vm.Value))) : "";
            var info = isSnapshot
                ? ValueMap.Empty.With(DiskSnapshotTypeKey, CrashConsistent).With(PowerStateAtSnapshotKey, (stateAtSnapshot ?? source.PowerState).ToWire())
                : ValueMap.Empty;
            var created = context.Write(tx =>
            {
                var copy = WriteVmCopy(tx, vm, newName, operation, newState, suspendImage, now, metadata, info);
                foreach (var (vbd, vdi) in disks)
                {
                    CopyVbd(tx, vbd, copy, vdi, claimDisk: true);
                }
                foreach (var vif in tx.Get(vm).VIFs.Where(tx.Exists))
                {
                    CopyVif(tx, vif, copy, preserveMac: isSnapshot);
                }
                ForceStateReset(tx, copy, newState);
                return copy;
            });
            await context.SettledAsync();
            return created;
        }
        catch
        {
            await DiscardDisksAsync(made);
            throw;
        }
    }

    /// <summary>
    /// The disks of <paramref name="vbds"/>, in order, as the operation makes them: an empty drive has
    /// none, a CD keeps its image, others are branched or copied. Task progress follows their sizes.
    /// </summary>
    private async ValueTask<List<(VBDRef Vbd, VDIRef Vdi)>> CopyDisksAsync(CallContext context, IReadOnlyList<VBDRecord> vbds, DiskOperation operation,
        SRRef copyTo, List<VDIRef> made)
    {
        var snapshot = context.Snapshot;
        long SizeOf(VBDRecord b) => !b.Empty && snapshot.TryGet(b.VDI, out var vdi) ? vdi.VirtualSize : 0;
        var total = Math.Max(1.0, vbds.Sum(b => (double)SizeOf(b)));
        var done = 0L;
        var result = new List<(VBDRef, VDIRef)>();
        foreach (var vbd in vbds)
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var size = SizeOf(vbd);
            VDIRef disk;
            if (vbd.Empty || vbd.VDI.IsNull)
            {
                disk = VDIRef.Null;
            }
            else if (vbd.Type == VbdType.CD)
            {
                disk = vbd.VDI;
            }
            else
            {
                var from = done / total;
                var to = (done + size) / total;
                disk = await CopyDiskAsync(context, vbd.VDI, operation, copyTo, p => context.ReportProgress(from + (to - from) * p));
                made.Add(disk);
            }
            done += size;
            context.ReportProgress(done / total);
            result.Add((vbd.Ref, disk));
        }
        return result;
    }

    /// <summary>One disk, as its own VDI operation: registered on the VDI so that nothing else runs on it meanwhile.</summary>
    private async ValueTask<VDIRef> CopyDiskAsync(CallContext context, VDIRef vdi, DiskOperation operation, SRRef copyTo, Action<double>? progress)
    {
        var vdiOperation = operation switch
        {
            DiskOperation.Clone => VdiOperations.Clone,
            DiskOperation.Copy => VdiOperations.Copy,
            _ => VdiOperations.Snapshot,
        };
        var guard = new OperationGuard(context.Database, rules);
        using var registered = await guard.BeginAsync(VDIRef.Class, vdi.Value, vdiOperation.ToWire(), XapiDatabase.NewRef(), context.Cancellation);
        var driverParams = ValueMap.Empty.With(EpochHintKey, Guid.NewGuid().ToString("D"));
        return operation switch
        {
            DiskOperation.Clone => await disks.Clone(context, vdi, driverParams),
            DiskOperation.Copy => await CopyDataAsync(context, vdi, copyTo.IsNull ? context.Snapshot.Get(vdi).SR : copyTo, progress),
            _ => await disks.Snapshot(context, vdi, driverParams),
        };
    }

    /// <summary>VDI.copy into a new VDI of <paramref name="sr"/>: only the extents that hold data move.</summary>
    private async ValueTask<VDIRef> CopyDataAsync(CallContext context, VDIRef vdi, SRRef sr, Action<double>? progress)
    {
        var snapshot = context.Snapshot;
        var source = snapshot.Get(vdi);
        snapshot.Get(sr);
        var target = await storage.CreateVdiAsync(sr,
            new VdiSpec(Guid.NewGuid().ToString("D"), source.VirtualSize, source.NameLabel, source.Type, false, new Dictionary<string, string>()),
            v =>
            {
                v.NameDescription = source.NameDescription;
                v.Sharable = source.Sharable;
                v.OtherConfig = source.OtherConfig;
                v.Tags = source.Tags;
            },
            context.Cancellation);
        try
        {
            await using var reader = await OpenVdiAsync(context, vdi, writable: false, context.Cancellation);
            await using var writer = await OpenVdiAsync(context, target, writable: true, context.Cancellation);
            await DiskCopy.CopyAsync(reader, writer, only: null, targetIsEmpty: true, progress, context.Cancellation);
            await writer.FlushAsync(context.Cancellation);
        }
        catch (SrFullException e)
        {
            await DiscardDisksAsync([target]);
            throw XenApiErrors.SrFull(e.Requested.ToString(CultureInfo.InvariantCulture), e.Available.ToString(CultureInfo.InvariantCulture));
        }
        catch
        {
            await DiscardDisksAsync([target]);
            throw;
        }
        await storage.ScanAsync(sr, CancellationToken.None);
        return target;
    }

    /// <summary>Destroys disks an operation made before it failed; not cancellable, since a cancelled operation is what it cleans up after.</summary>
    private async ValueTask DiscardDisksAsync(IEnumerable<VDIRef> made)
    {
        foreach (var vdi in made.Reverse())
        {
            try
            {
                await storage.DiscardVdiAsync(vdi);
            }
            catch (Exception e) when (e is XenApiException or IOException)
            {
                // The SR's next scan finds what is left; the operation's own error is what the caller needs.
            }
        }
    }

    /// <summary>copy_vm_record: the new VM's row, with fresh identity, metrics and runtime state.</summary>
    private static VMRef WriteVmCopy(Transaction tx, VMRef vm, string newName, DiskOperation operation, VmPowerState newState, VDIRef suspendImage,
        DateTime now, string metadata, ValueMap info)
    {
        var source = tx.Get(vm);
        var isSnapshot = operation is DiskOperation.Snapshot or DiskOperation.Checkpoint;
        var otherConfig = source.OtherConfig;
        if (!isSnapshot)
        {
            otherConfig = otherConfig.With(MacSeedKey, Guid.NewGuid().ToString("D"));
        }
        otherConfig = otherConfig.Without(VmDestroyRule.DefaultTemplateKey).Without(XensourceInternalKey);
        if (source.IsATemplate && !otherConfig.ContainsKey(BaseTemplateNameKey))
        {
            otherConfig = otherConfig.With(BaseTemplateNameKey, source.NameLabel);
        }
        var metrics = CopyMetrics(tx, source.Metrics);
        var guestMetrics = CopyGuestMetrics(tx, source.GuestMetrics);
        var sourceValues = tx.GetRowValues(VMRef.Class, vm.Value);
        var created = new VMRef(tx.CreateRow(VMRef.Class, values =>
        {
            CopyStored(VMRef.Class, sourceValues, values);
            var v = new VMValues(values)
            {
                Uuid = Guid.NewGuid().ToString("D"),
                NameLabel = newName,
                PowerState = newState,
                AllowedOperations = [],
                CurrentOperations = ValueMap.Empty,
                BlockedOperations = ValueMap.Empty,
                IsATemplate = isSnapshot || source.IsATemplate,
                IsDefaultTemplate = false,
                IsASnapshot = isSnapshot,
                SnapshotOf = isSnapshot ? vm : VMRef.Null,
                SnapshotTime = isSnapshot ? now : XType.Epoch,
                SnapshotInfo = info,
                SnapshotMetadata = metadata,
                TransportableSnapshotId = "",
                Parent = isSnapshot ? source.Parent : VMRef.Null,
                ResidentOn = HostRef.Null,
                ScheduledToBeResidentOn = HostRef.Null,
                SuspendVDI = suspendImage,
                OtherConfig = otherConfig,
                Domid = -1,
                Domarch = "",
                Metrics = metrics,
                GuestMetrics = guestMetrics,
                Blobs = ValueMap.Empty,
                HaAlwaysRun = false,
                ProtectionPolicy = VMPPRef.Null,
                IsSnapshotFromVmpp = false,
                IsVmssSnapshot = false,
                SnapshotSchedule = VMSSRef.Null,
                Appliance = VMApplianceRef.Null,
                StartDelay = 0,
                ShutdownDelay = 0,
                Order = 0,
                SuspendSR = SRRef.Null,
                Version = 0,
                GenerationId = FreshGenerationId(source.GenerationId),
                RequiresReboot = false,
                PendingGuidances = [],
                PendingGuidancesRecommended = [],
                PendingGuidancesFull = [],
                AttachedPCIs = [],
                Groups = [],
            };
        }));
        if (isSnapshot)
        {
            // The VM now descends from its newest snapshot: the snapshot's children list it.
            tx.Update(vm, v => v.Parent = created);
        }
        return created;
    }

    /// <summary>Xapi_vbd_helpers.copy: the same device onto <paramref name="vm"/>, backed by <paramref name="vdi"/>, with fresh metrics.</summary>
    private static VBDRef CopyVbd(Transaction tx, VBDRef vbd, VMRef vm, VDIRef vdi, bool claimDisk)
    {
        var source = tx.Get(vbd);
        var metrics = tx.CreateVBDMetrics(m => m.Uuid = Guid.NewGuid().ToString("D"));
        var sourceValues = tx.GetRowValues(VBDRef.Class, vbd.Value);
        var otherConfig = source.OtherConfig;
        if (claimDisk && source.Type == VbdType.Disk && !otherConfig.ContainsKey(OwnerKey))
        {
            otherConfig = otherConfig.With(OwnerKey, "");
        }
        return new VBDRef(tx.CreateRow(VBDRef.Class, values =>
        {
            CopyStored(VBDRef.Class, sourceValues, values);
            _ = new VBDValues(values)
            {
                Uuid = Guid.NewGuid().ToString("D"),
                AllowedOperations = [],
                CurrentOperations = ValueMap.Empty,
                StorageLock = false,
                VM = vm,
                VDI = vdi,
                Empty = source.Empty || vdi.IsNull,
                StatusCode = 0,
                StatusDetail = "",
                RuntimeProperties = ValueMap.Empty,
                QosSupportedAlgorithms = [],
                OtherConfig = otherConfig,
                Metrics = metrics,
            };
        }));
    }

    /// <summary>
    /// Xapi_vif_helpers.copy: the same device, network and settings on <paramref name="vm"/>; the MAC is
    /// kept for a snapshot, else derived anew from the new VM's MAC seed, as VIF.create with an empty MAC does.
    /// </summary>
    private static VIFRef CopyVif(Transaction tx, VIFRef vif, VMRef vm, bool preserveMac)
    {
        var source = tx.Get(vif);
        var mac = source.MAC;
        var generated = false;
        if (!preserveMac && tx.Get(vm).OtherConfig.TryGetValue(MacSeedKey, out var seed) && seed is string macSeed
            && OcamlInt.TryParseUnsignedDecimal(source.Device, out var number))
        {
            mac = VIFApi.GenerateMac(macSeed, number);
            generated = true;
        }
        var metrics = tx.CreateVIFMetrics(m => m.Uuid = Guid.NewGuid().ToString("D"));
        var sourceValues = tx.GetRowValues(VIFRef.Class, vif.Value);
        return new VIFRef(tx.CreateRow(VIFRef.Class, values =>
        {
            CopyStored(VIFRef.Class, sourceValues, values);
            _ = new VIFValues(values)
            {
                Uuid = Guid.NewGuid().ToString("D"),
                AllowedOperations = [],
                CurrentOperations = ValueMap.Empty,
                VM = vm,
                MAC = mac,
                MACAutogenerated = generated,
                StatusCode = 0,
                StatusDetail = "",
                RuntimeProperties = ValueMap.Empty,
                QosSupportedAlgorithms = [],
                Metrics = metrics,
            };
        }));
    }

    /// <summary>copy_metrics: the source's values in a new row, or fresh ones when it has none (templates).</summary>
    private static VMMetricsRef CopyMetrics(Transaction tx, VMMetricsRef metrics)
    {
        if (!metrics.IsNull && tx.Exists(metrics))
        {
            var sourceValues = tx.GetRowValues(VMMetricsRef.Class, metrics.Value);
            return new VMMetricsRef(tx.CreateRow(VMMetricsRef.Class, values =>
            {
                CopyStored(VMMetricsRef.Class, sourceValues, values);
                _ = new VMMetricsValues(values) { Uuid = Guid.NewGuid().ToString("D") };
            }));
        }
        return tx.CreateVMMetrics(m =>
        {
            m.Uuid = Guid.NewGuid().ToString("D");
            m.VCPUsUtilisation = ValueMap.Empty.With(0L, 0.0);
        });
    }

    private static VMGuestMetricsRef CopyGuestMetrics(Transaction tx, VMGuestMetricsRef guestMetrics)
    {
        if (guestMetrics.IsNull || !tx.Exists(guestMetrics))
        {
            return VMGuestMetricsRef.Null;
        }
        var sourceValues = tx.GetRowValues(VMGuestMetricsRef.Class, guestMetrics.Value);
        return new VMGuestMetricsRef(tx.CreateRow(VMGuestMetricsRef.Class, values =>
        {
            CopyStored(VMGuestMetricsRef.Class, sourceValues, values);
            _ = new VMGuestMetricsValues(values) { Uuid = Guid.NewGuid().ToString("D") };
        }));
    }

    /// <summary>force_state_reset for a VM that has no domain, forgetting its operations in progress (VmRuntime.ResetState).</summary>
    private void ForceStateReset(Transaction tx, VMRef vm, VmPowerState state)
    {
        runtime.ResetState(tx, vm, state, keepCurrentOperations: false);
        RefreshAllowedOperations(tx, vm);
    }

    /// <summary>The stored fields of a row; the set-valued fields the database derives from other rows are not copied.</summary>
    private static void CopyStored(ClassMeta cls, IReadOnlyList<object?> source, object?[] target)
    {
        foreach (var field in cls.Fields)
        {
            if (field.ManyOf is null)
            {
                target[field.Ordinal] = source[field.Ordinal];
            }
        }
    }

    /// <summary>A new Windows generation id: two random non-negative int64s; a VM without one keeps none (xapi_vm_helpers.ml).</summary>
    private static string FreshGenerationId(string current) => current.Length == 0
        ? ""
        : string.Create(CultureInfo.InvariantCulture, $"{RandomInt64()}:{RandomInt64()}");

    private static long RandomInt64() => RandomNumberGenerator.GetInt32(int.MaxValue) * (long)int.MaxValue + RandomNumberGenerator.GetInt32(int.MaxValue);

    private static DateTime WholeSeconds(DateTime value) => new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
