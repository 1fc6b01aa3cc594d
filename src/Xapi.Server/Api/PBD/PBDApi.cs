using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage.Service;

namespace Xapi.Server.Api;

/// <summary>
/// Physical block devices: how one host reaches one SR. Plugging attaches the SR through its
/// driver (finishing whatever a crash interrupted) and brings its records up to date.
/// </summary>
public sealed class PBDApi(StorageManager storage) : IPBDApi<CallContext>, IObjectLifecycle
{
    // The key SM adds to device_config itself; clients may not set it.
    private const string SrMasterKey = "SRmaster";

    ClassMeta IObjectLifecycle.Class => PBDRef.Class;

    [RunsOn(HostSelection.ResidentHost)]
    public ValueTask Plug(CallContext context, PBDRef self) => new(PlugAsync(context, self));

    internal async Task PlugAsync(CallContext context, PBDRef self)
    {
        var snapshot = context.Snapshot;
        var pbd = snapshot.Get(self);
        if (pbd.CurrentlyAttached)
        {
            return;
        }
        var sr = snapshot.Get(pbd.SR);
        var driver = storage.DriverOf(sr);
        if (!sr.Shared)
        {
            foreach (var other in snapshot.All<PBDRecord>())
            {
                if (other.SR == pbd.SR && other.Ref != self && other.CurrentlyAttached)
                {
                    throw XenApiErrors.SrNotSharable(pbd.SR.Value, other.Host.Value);
                }
            }
        }
        var driverContext = storage.ContextOf(sr, pbd);
        await storage.RunAsync(pbd.SR, async () =>
        {
            await driver.AttachAsync(driverContext, context.Cancellation).ConfigureAwait(false);
            var scan = await driver.ScanAsync(driverContext, context.Cancellation).ConfigureAwait(false);
            context.Write(tx =>
            {
                tx.Update(self, p => p.CurrentlyAttached = true);
                StorageRecords.Synchronize(tx, pbd.SR, scan);
            });
        }).ConfigureAwait(false);
        storage.RequestCollection(pbd.SR);
    }

    [RunsOn(HostSelection.ResidentHost)]
    public async ValueTask Unplug(CallContext context, PBDRef self)
    {
        var snapshot = context.Snapshot;
        var pbd = snapshot.Get(self);
        if (!pbd.CurrentlyAttached)
        {
            return;
        }
        var inUse = snapshot.All<VBDRecord>()
            .Where(b => b.CurrentlyAttached && !b.Empty && snapshot.TryGet(b.VDI, out var vdi) && vdi.SR == pbd.SR)
            .Select(b => b.VDI.Value).Distinct().ToArray();
        if (inUse.Length > 0)
        {
            throw new XenApiException(ErrorCodes.VdiInUse, inUse);
        }
        var sr = snapshot.Get(pbd.SR);
        var driver = storage.DriverOf(sr);
        var driverContext = storage.ContextOf(sr, pbd);
        await storage.WhenCollectedAsync(pbd.SR).ConfigureAwait(false);
        await storage.RunAsync(pbd.SR, async () =>
        {
            await driver.DetachAsync(driverContext, context.Cancellation).ConfigureAwait(false);
            context.Write(tx =>
            {
                tx.Update(self, p => p.CurrentlyAttached = false);
                StorageAllowedOperations.Refresh(tx, pbd.SR);
            });
        }).ConfigureAwait(false);
    }

    public ValueTask SetDeviceConfig(CallContext context, PBDRef self, ValueMap value)
    {
        context.Write(tx => tx.Update(self, p => p.DeviceConfig = value));
        return ValueTask.CompletedTask;
    }

    ValueTask<string> IObjectLifecycle.CreateAsync(CallContext context, object?[] values)
    {
        var pbd = new PBDValues(values);
        return ValueTask.FromResult(context.Write(tx =>
        {
            tx.Get(pbd.Host);
            tx.Get(pbd.SR);
            foreach (var existing in tx.All<PBDRecord>())
            {
                if (existing.SR == pbd.SR && existing.Host == pbd.Host)
                {
                    throw XenApiErrors.PbdExists(pbd.SR.Value, pbd.Host.Value, existing.Ref.Value);
                }
            }
            if (pbd.DeviceConfig.TryGetValue(SrMasterKey, out var master))
            {
                throw XenApiErrors.ValueNotSupported(SrMasterKey, master as string ?? "", "This key is for internal use only");
            }
            var host = pbd.Host;
            var sr = pbd.SR;
            var deviceConfig = pbd.DeviceConfig;
            return tx.CreatePBD(p =>
            {
                p.Uuid = Guid.NewGuid().ToString("D");
                p.Host = host;
                p.SR = sr;
                p.DeviceConfig = deviceConfig;
            }).Value;
        }));
    }

    ValueTask IObjectLifecycle.DestroyAsync(CallContext context, string reference)
    {
        var self = new PBDRef(reference);
        context.Write(tx =>
        {
            if (tx.Get(self).CurrentlyAttached)
            {
                throw XenApiErrors.OperationNotAllowed("PBD is currently attached");
            }
            tx.Delete(self);
        });
        return ValueTask.CompletedTask;
    }
}
