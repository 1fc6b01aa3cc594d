using System.Globalization;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.DataPath;
using Xapi.Storage.Service;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// Suspend and resume (xapi_vm.ml, xapi_xenops.ml): the guest's memory and device state go into a
/// suspend VDI on an SR the VM's host can reach, through the storage data path, and come back
/// from it; the image is destroyed once the VM runs again.
/// </summary>
public sealed partial class VMApi
{
    // sm_config keys a suspend image carries (xapi_xenops.ml): whose it is, and how much to allocate up front.
    private const string VmHintKey = "vmhint";
    private const string InitialAllocationKey = "initial_allocation";

    // What a suspend image is called, in both name_label and name_description.
    private const string SuspendImageName = "Suspend image";

    // The image reserves room for static_max with headroom, plus 100 MiB for device state (xapi_xenops.ml).
    private const double SuspendImageMemoryFactor = 1.2 * 1.05;
    private const long SuspendImageExtraBytes = 100L << 20;

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.Suspend)]
    public async ValueTask Suspend(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        var uuid = Guid.Parse(record.Uuid);
        var sr = SuspendSr(context, record) ?? throw XenApiErrors.VmNoSuspendSr(vm.Value);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        context.ReportProgress(0.1);
        await SaveToImageAsync(context, vm, record, sr, uuid, context.ReportProgress);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Suspended, "suspended");
    }

    /// <summary>
    /// The first half of a suspend (and of a checkpoint): the image is written to a new suspend VDI
    /// and the domain is gone; the VM is Suspended, or Halted if the guest was lost without a whole image.
    /// </summary>
    private async ValueTask<VDIRef> SaveToImageAsync(CallContext context, VMRef vm, VMRecord record, SRRef sr, Guid uuid, Action<double> progress)
    {
        var size = (long)(record.MemoryStaticMax * SuspendImageMemoryFactor) + SuspendImageExtraBytes;
        var sizeText = size.ToString(CultureInfo.InvariantCulture);
        var image = await storage.CreateVdiAsync(sr,
            new VdiSpec(Guid.NewGuid().ToString("D"), size, SuspendImageName, VdiType.Suspend, false,
                new Dictionary<string, string> { [VmHintKey] = record.Uuid, [InitialAllocationKey] = sizeText }),
            v =>
            {
                v.NameDescription = SuspendImageName;
                v.SmConfig = v.SmConfig.With(VmHintKey, record.Uuid).With(InitialAllocationKey, sizeText);
            },
            context.Cancellation);
        context.Write(tx => tx.Update(vm, v => v.SuspendVDI = image));
        var saved = false;
        try
        {
            await using (var disk = await OpenVdiAsync(context, image, writable: true, CancellationToken.None))
            {
                await using var stream = new DiskImageStream(disk);
                // Not cancellable once the guest is told (xapi_xenops.ml): half an image is no image.
                await runtime.Orchestrator.SuspendAsync(uuid, stream, progress, CancellationToken.None);
                await disk.FlushAsync(CancellationToken.None);
                saved = true;
            }
            context.Write(tx => tx.Update(vm, v => v.LastBootedRecord = DomainConfigs.Describe(DomainConfigs.Of(tx, tx.Get(vm)))));
        }
        catch (Exception e) when (!saved && e is XenopsException or IOException or XenApiException)
        {
            await storage.DiscardVdiAsync(image);
            context.Write(tx => tx.Update(vm, v => v.SuspendVDI = VDIRef.Null));
            throw e is XenopsException backend ? XenopsErrors.ToXenApi(backend, vm) : e;
        }
        finally
        {
            await runtime.SyncAsync(vm, uuid, saved ? VmPowerState.Suspended : VmPowerState.Halted, CancellationToken.None);
        }
        return image;
    }

    [RunsOn(HostSelection.ChosenHost)]
    [RunsAs<VmOperations>(VmOperations.Resume)]
    public async ValueTask Resume(CallContext context, VMRef vm, bool startPaused, bool force)
    {
        if (await BootRefusalAsync(context, vm, runtime.ThisHost) is { } refused && refused.Code != ErrorCodes.HostNotEnoughFreeMemory)
        {
            throw XenApiErrors.NoHostsAvailable();
        }
        await ResumeHereAsync(context, vm, startPaused);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Resumed, "resumed " + VmAlerts.OnHost(context, runtime.ThisHost));
    }

    [RunsOn(HostSelection.NamedHost)]
    [RunsAs<VmOperations>(VmOperations.ResumeOn)]
    public async ValueTask ResumeOn(CallContext context, VMRef vm, HostRef host, bool startPaused, bool force)
    {
        await AssertCanBootHereAsync(context, vm, host);
        await ResumeHereAsync(context, vm, startPaused);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Resumed, "resumed " + VmAlerts.OnHost(context, runtime.ThisHost));
    }

    private async ValueTask ResumeHereAsync(CallContext context, VMRef vm, bool paused)
    {
        var record = context.Snapshot.Get(vm);
        var image = record.SuspendVDI;
        if (image.IsNull || !context.Snapshot.Exists(image))
        {
            context.Write(tx => ForceHalted(tx, vm));
            // Declared with [vm]; real hosts send the class name first.
            throw new XenApiException(ErrorCodes.VmHasNoSuspendVdi, VMRef.Class.Name, vm.Value);
        }
        var uuid = Guid.Parse(record.Uuid);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var resumed = false;
        try
        {
            var config = DomainConfigs.Of(context.Snapshot, record);
            await using (var disk = await OpenVdiAsync(context, image, writable: false, hold.Token))
            {
                await using var stream = new DiskImageStream(disk);
                await runtime.Orchestrator.ResumeAsync(config, stream, paused, context.ReportProgress, hold.Token);
            }
            resumed = true;
        }
        catch (XenopsException e)
        {
            throw XenopsErrors.ToXenApi(e, vm);
        }
        catch (OperationCanceledException) when (hold.Preempted)
        {
            throw XenopsErrors.Cancelled(context);
        }
        finally
        {
            // A resume that failed leaves the VM suspended, its image untouched.
            await runtime.SyncAsync(vm, uuid, VmPowerState.Suspended, CancellationToken.None);
        }
        if (resumed)
        {
            context.Write(tx => tx.Update(vm, v => v.SuspendVDI = VDIRef.Null));
            await storage.DiscardVdiAsync(image);
            await context.SettledAsync();
        }
    }

    /// <summary>
    /// Where the suspend image goes: the first of the VM's, the pool's and its host's suspend SR
    /// that the host has a PBD for (helpers.ml choose_suspend_sr).
    /// </summary>
    private SRRef? SuspendSr(CallContext context, VMRecord vm)
    {
        var snapshot = context.Snapshot;
        var host = vm.ResidentOn.IsNull ? runtime.ThisHost : vm.ResidentOn;
        var pool = snapshot.All<PoolRecord>().First();
        var candidates = new[] { vm.SuspendSR, pool.SuspendImageSR, snapshot.Exists(host) ? snapshot.Get(host).SuspendImageSr : SRRef.Null };
        foreach (var sr in candidates)
        {
            if (!sr.IsNull && snapshot.Exists(sr) && snapshot.Get(sr).PBDs.Where(snapshot.Exists).Any(p => snapshot.Get(p).Host == host))
            {
                return sr;
            }
        }
        return null;
    }

    private async ValueTask<IDiskImage> OpenVdiAsync(CallContext context, VDIRef vdi, bool writable, CancellationToken cancellationToken)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.Get(vdi);
        var srContext = storage.PluggedContext(snapshot, record.SR);
        var driver = storage.DriverOf(snapshot.Get(record.SR));
        return await driver.OpenAsync(srContext, StorageRecords.InfoOf(record), writable, cancellationToken);
    }
}
