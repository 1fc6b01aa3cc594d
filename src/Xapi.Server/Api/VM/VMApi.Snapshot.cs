using System.Globalization;
using System.Runtime.ExceptionServices;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.DataPath;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// Snapshots, checkpoints and reverts (xapi_vm_snapshot.ml): a snapshot is a halted template VM
/// holding snapshots of the source's disks and, in <c>snapshot_metadata</c>, the source's record;
/// a checkpoint also holds the guest's memory in a suspend image; a revert puts the VM back to both.
/// </summary>
public sealed partial class VMApi
{
    // Fields a revert leaves as the VM has them (xapi_vm_snapshot.ml do_not_copy): identity, runtime
    // links, policies, what the user keeps across reverts, and child objects (not stored here at all).
    private static readonly HashSet<int> KeptOnRevert =
    [
        VMFields.Uuid, VMFields.SuspendVDI, VMFields.PowerState, VMFields.Parent, VMFields.CurrentOperations, VMFields.AllowedOperations,
        VMFields.Metrics, VMFields.GuestMetrics, VMFields.ResidentOn, VMFields.Domid, VMFields.ProtectionPolicy, VMFields.SnapshotSchedule,
        VMFields.ScheduledToBeResidentOn, VMFields.Tags, VMFields.Affinity, VMFields.Groups, VMFields.AttachedPCIs, VMFields.IsSnapshotFromVmpp,
    ];

    // Metadata is the daemon's own XML-RPC; these bound its parse as any other.
    private static readonly RpcLimits MetadataLimits = new(MaxBodyBytes: 64 << 20);

    [RunsAs<VmOperations>(VmOperations.Snapshot)]
    public async ValueTask<VMRef> Snapshot(CallContext context, VMRef vm, string newName, IReadOnlyList<VDIRef> ignoreVdis)
    {
        var created = await CopyVmAsync(context, vm, newName, DiskOperation.Snapshot, SRRef.Null, ignoreVdis, null);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Snapshotted, "snapshotted, snapshot name: " + newName);
        return created;
    }

    /// <summary>
    /// A running VM is suspended into an image, its disks and the image are snapshotted, and it is
    /// resumed from the image; other states only snapshot what they have.
    /// </summary>
    [RunsAs<VmOperations>(VmOperations.Checkpoint)]
    public async ValueTask<VMRef> Checkpoint(CallContext context, VMRef vm, string newName)
    {
        var created = await CheckpointAsync(context, vm, newName);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Checkpointed, "checkpointed, snapshot name: " + newName);
        return created;
    }

    private async ValueTask<VMRef> CheckpointAsync(CallContext context, VMRef vm, string newName)
    {
        var record = context.Snapshot.Get(vm);
        if (record.PowerState != VmPowerState.Running)
        {
            return await CopyVmAsync(context, vm, newName, DiskOperation.Checkpoint, SRRef.Null, [], null);
        }
        AssertDisksCanSnapshot(context, record);
        var sr = SuspendSr(context, record) ?? throw XenApiErrors.VmNoSuspendSr(vm.Value);
        var uuid = Guid.Parse(record.Uuid);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var image = await SaveToImageAsync(context, vm, record, sr, uuid, p => context.ReportProgress(0.3 * p));
        VMRef created = VMRef.Null;
        ExceptionDispatchInfo? failure = null;
        try
        {
            created = await CopyVmAsync(context, vm, newName, DiskOperation.Checkpoint, SRRef.Null, [], VmPowerState.Running);
        }
        catch (Exception e) when (e is XenApiException or OperationCanceledException or IOException)
        {
            // The guest runs again whatever became of its snapshot.
            failure = ExceptionDispatchInfo.Capture(e);
        }
        await ResumeFromImageAsync(context, vm, uuid, image);
        if (failure is not null)
        {
            if (failure.SourceException is OperationCanceledException && !context.Cancellation.IsCancellationRequested)
            {
                throw XenopsErrors.Cancelled(context);
            }
            failure.Throw();
        }
        return created;
    }

    /// <summary>checkpoint's capability check: a disk whose SR cannot snapshot refuses it, naming the VM (as real hosts do).</summary>
    private void AssertDisksCanSnapshot(CallContext context, VMRecord vm)
    {
        var snapshot = context.Snapshot;
        var srs = vm.VBDs.Where(snapshot.Exists).Select(snapshot.Get).Where(b => b.Type != VbdType.CD && !b.Empty && snapshot.Exists(b.VDI))
            .Select(b => snapshot.Get(b.VDI).SR).Distinct();
        foreach (var sr in srs)
        {
            if (snapshot.TryGet(sr, out var record) && !storage.DriverOf(record).Description.Has(SmFeatures.VdiSnapshot))
            {
                // Declared with [sr]; real hosts send the VM.
                throw XenApiErrors.SrOperationNotSupported(vm.Ref.Value);
            }
        }
    }

    /// <summary>The second half: the guest runs again from the image, which is then destroyed. Not cancellable: the guest must come back.</summary>
    private async ValueTask ResumeFromImageAsync(CallContext context, VMRef vm, Guid uuid, VDIRef image)
    {
        var resumed = false;
        try
        {
            var config = DomainConfigs.Of(context.Snapshot, context.Snapshot.Get(vm));
            await using (var disk = await OpenVdiAsync(context, image, writable: false, CancellationToken.None))
            {
                await using var stream = new DiskImageStream(disk);
                await runtime.Orchestrator.ResumeAsync(config, stream, paused: false, p => context.ReportProgress(0.8 + 0.2 * p), CancellationToken.None);
            }
            resumed = true;
        }
        catch (XenopsException e)
        {
            // The VM stays suspended with its image: VM.resume can try again.
            throw XenopsErrors.ToXenApi(e, vm);
        }
        finally
        {
            await runtime.SyncAsync(vm, uuid, VmPowerState.Suspended, CancellationToken.None);
        }
        if (resumed)
        {
            context.Write(tx => tx.Update(vm, v => v.SuspendVDI = VDIRef.Null));
            await storage.DiscardVdiAsync(image);
        }
    }

    /// <summary>
    /// Puts the snapshot's VM back to the snapshot: shut down if it runs, its record from the snapshot's
    /// metadata, its disks replaced by clones of the snapshot's (the old ones destroyed), its VIFs by
    /// copies with the same MACs; Halted, or Suspended with a copy of a checkpoint's image.
    /// </summary>
    [RunsAs<VmOperations>(VmOperations.Revert)]
    public async ValueTask Revert(CallContext context, VMRef snapshot)
    {
        var snap = context.Snapshot.Get(snapshot);
        var vm = snap.SnapshotOf;
        if (vm.IsNull || !context.Snapshot.Exists(vm))
        {
            // Re-creating a deleted VM from its snapshot is not done here.
            throw new XenApiException(ErrorCodes.VmRevertFailed, snapshot.Value, vm.Value);
        }
        var guard = new OperationGuard(context.Database, rules);
        using var reverting = await guard.BeginAsync(VMRef.Class, vm.Value, VmOperations.Reverting.ToWire(), context.OperationRef, context.Cancellation);
        if (context.Snapshot.Get(vm).PowerState != VmPowerState.Halted)
        {
            await HardStopAsync(context, vm);
        }
        var metadata = MetadataOf(context.Snapshot, snap, out var keptToo);
        context.Write(tx => RevertFields(tx, vm, metadata, keptToo));
        context.ReportProgress(0.1);
        var uuid = Guid.Parse(context.Snapshot.Get(vm).Uuid);
        // Destructive and quick: not cancellable once started, as on real hosts.
        await using var hold = await runtime.HoldAsync(uuid, CancellationToken.None);
        try
        {
            await RevertDisksAndDevicesAsync(context, snapshot, vm);
            context.Write(tx =>
            {
                RevertMetrics(tx, snapshot, vm);
                tx.Update(vm, v =>
                {
                    v.Parent = snapshot;
                    v.GenerationId = FreshGenerationId(v.GenerationId);
                });
                ForceStateReset(tx, vm, tx.Get(snapshot).PowerState);
            });
            context.ReportProgress(1.0);
            await context.SettledAsync();
        }
        catch (Exception e) when (e is XenApiException or IOException or OperationCanceledException)
        {
            context.Write(tx => ForceHalted(tx, vm));
            if (e is XenApiException { Code: ErrorCodes.VdiIncompatibleType } || e is XenApiException failed
                && (failed.Code == SrBackendFailure(SmErrors.SrNoSpace) || failed.Code == SrBackendFailure(SmErrors.SnapshotChainTooLong)))
            {
                throw;
            }
            // Declared as [vm; snapshot]; real hosts send the snapshot first.
            throw new XenApiException(ErrorCodes.VmRevertFailed, snapshot.Value, vm.Value);
        }
        await _alerts.RaiseAsync(context, vm, VmAlerts.SnapshotReverted, $"reverted to snapshot: {snap.NameLabel} (uuid {snap.Uuid})");
    }

    private static string SrBackendFailure(int code) => ErrorCodes.SrBackendFailure + "_" + code.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The record a revert brings back: the snapshot's metadata, or for a snapshot that has none (an
    /// older format) its own record, keeping then the VM's name and identity as a VM too.
    /// </summary>
    private static IReadOnlyDictionary<string, object?> MetadataOf(DbSnapshot db, VMRecord snap, out IReadOnlyCollection<int> keptToo)
    {
        if (snap.SnapshotMetadata.Length > 0)
        {
            keptToo = [];
            return XmlRpcReader.ReadValueFragment(snap.SnapshotMetadata, MetadataLimits) as IReadOnlyDictionary<string, object?>
                ?? throw XenApiErrors.InternalError("the snapshot's metadata is not a VM record");
        }
        keptToo = [VMFields.NameLabel, VMFields.IsASnapshot, VMFields.IsATemplate, VMFields.IsDefaultTemplate, VMFields.SnapshotOf,
            VMFields.SnapshotTime, VMFields.TransportableSnapshotId];
        return db.ToRecord(db.Get(VMRef.Class, snap.Ref.Value)).ToDictionary(p => (string)p.Key, p => p.Value);
    }

    /// <summary>revert_vm_fields: the VM's record as the metadata has it, but for what a revert keeps.</summary>
    private static void RevertFields(Transaction tx, VMRef vm, IReadOnlyDictionary<string, object?> metadata, IReadOnlyCollection<int> keptToo)
    {
        tx.UpdateRow(VMRef.Class, vm.Value, values =>
        {
            foreach (var field in VMRef.Class.Fields)
            {
                if (field.ManyOf is null && !KeptOnRevert.Contains(field.Ordinal) && !keptToo.Contains(field.Ordinal) && metadata.TryGetValue(field.Name, out var wire))
                {
                    values[field.Ordinal] = field.Type.Coerce(wire, field.Name);
                }
            }
            var v = new VMValues(values) { HaAlwaysRun = false };
            if (v.DomainType == Xapi.Model.DomainType.Unspecified)
            {
                v.DomainType = v.HVMBootPolicy.Length == 0 ? Xapi.Model.DomainType.Pv : Xapi.Model.DomainType.Hvm;
            }
        });
    }

    /// <summary>
    /// revert_vbds (VDI.revert is not offered by these SR types, so every disk comes back as a clone):
    /// the VM's disks that have a snapshot here, and its suspend image, are destroyed; disks without
    /// one are detached and kept; the snapshot's disks, CDs and image are cloned onto the VM.
    /// </summary>
    private async ValueTask RevertDisksAndDevicesAsync(CallContext context, VMRef snapshot, VMRef vm)
    {
        var db = context.Snapshot;
        var snap = db.Get(snapshot);
        var current = db.Get(vm);
        var snapVbds = snap.VBDs.Where(db.Exists).Select(db.Get).ToList();
        var snapDiskVbds = snapVbds.Where(b => b.Type == VbdType.Disk).ToList();
        var snapCdVbds = snapVbds.Where(b => b.Type != VbdType.Disk).ToList();
        var snapshotOf = snapDiskVbds.Where(b => db.Exists(b.VDI)).Select(b => db.Get(b.VDI).SnapshotOf).ToHashSet();
        var vmVbds = current.VBDs.Where(db.Exists).Select(db.Get).ToList();
        var vmDisks = vmVbds.Where(b => b.Type == VbdType.Disk && !b.VDI.IsNull).Select(b => b.VDI).ToHashSet();
        var withoutSnapshot = vmDisks.Where(d => !snapshotOf.Contains(d)).ToHashSet();
        var toDestroy = vmDisks.Where(d => !withoutSnapshot.Contains(d)).ToList();
        if (!current.SuspendVDI.IsNull)
        {
            toDestroy.Add(current.SuspendVDI);
        }
        // Taken before the old disks go: destroying a disk clears the snapshot_of of its snapshots.
        var snapshotsOfOldDisks = db.All<VDIRecord>().Where(v => !v.SnapshotOf.IsNull && snapshotOf.Contains(v.SnapshotOf))
            .GroupBy(v => v.SnapshotOf).ToDictionary(g => g.Key, g => g.Select(v => v.Ref).ToList());
        var previousOf = snapDiskVbds.ToDictionary(b => b.Ref, b => db.TryGet(b.VDI, out var vdi) ? vdi.SnapshotOf : VDIRef.Null);
        context.Write(tx =>
        {
            foreach (var vbd in vmVbds.Where(b => b.Type != VbdType.Disk || toDestroy.Contains(b.VDI) || withoutSnapshot.Contains(b.VDI)))
            {
                DeleteIfExists(tx, vbd.Metrics);
                DeleteIfExists(tx, vbd.Ref);
            }
        });
        foreach (var vdi in toDestroy)
        {
            if (context.Snapshot.TryGet(vdi, out var record) && context.Snapshot.Get(record.SR).ContentType != IsoContentType)
            {
                await ((IObjectLifecycle)disks).DestroyAsync(context, vdi.Value);
            }
        }
        context.ReportProgress(0.2);
        var made = new List<VDIRef>();
        try
        {
            var cloned = await CopyDisksAsync(context, snapDiskVbds, DiskOperation.Clone, SRRef.Null, made);
            var clonedCds = await CopyDisksAsync(context, snapCdVbds, DiskOperation.Clone, SRRef.Null, made);
            context.ReportProgress(0.5);
            var image = VDIRef.Null;
            if (!snap.SuspendVDI.IsNull && context.Snapshot.Exists(snap.SuspendVDI))
            {
                image = await CopyDiskAsync(context, snap.SuspendVDI, DiskOperation.Clone, SRRef.Null, null);
                made.Add(image);
            }
            context.ReportProgress(0.6);
            context.Write(tx =>
            {
                foreach (var (vbd, clone) in cloned.Where(c => !c.Vdi.IsNull))
                {
                    // The VM's other snapshots of the old disk are now snapshots of its new one.
                    foreach (var other in snapshotsOfOldDisks.GetValueOrDefault(previousOf[vbd]) ?? [])
                    {
                        if (tx.Exists(other))
                        {
                            tx.Update(other, v => v.SnapshotOf = clone);
                        }
                    }
                }
                foreach (var (vbd, vdi) in cloned.Concat(clonedCds))
                {
                    CopyVbd(tx, vbd, vm, vdi, claimDisk: false);
                }
                tx.Update(vm, v => v.SuspendVDI = image);
                foreach (var vif in tx.Get(vm).VIFs.Where(tx.Exists))
                {
                    DeleteIfExists(tx, tx.Get(vif).Metrics);
                    tx.Delete(vif);
                }
                foreach (var vif in tx.Get(snapshot).VIFs.Where(tx.Exists))
                {
                    CopyVif(tx, vif, vm, preserveMac: true);
                }
            });
            context.ReportProgress(0.9);
        }
        catch
        {
            await DiscardDisksAsync(made);
            throw;
        }
    }

    /// <summary>update_guest_metrics and update_metrics: the VM's are replaced by copies of the snapshot's.</summary>
    private static void RevertMetrics(Transaction tx, VMRef snapshot, VMRef vm)
    {
        var snap = tx.Get(snapshot);
        var current = tx.Get(vm);
        DeleteIfExists(tx, current.GuestMetrics);
        var guest = CopyGuestMetrics(tx, snap.GuestMetrics);
        var metrics = current.Metrics;
        if (!snap.Metrics.IsNull && tx.Exists(snap.Metrics))
        {
            DeleteIfExists(tx, current.Metrics);
            metrics = CopyMetrics(tx, snap.Metrics);
        }
        tx.Update(vm, v =>
        {
            v.GuestMetrics = guest;
            v.Metrics = metrics;
        });
    }
}
