using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage;
using Xapi.Storage.Service;

namespace Xapi.Server.Api;

/// <summary>Storage repositories: made, found, scanned and removed through their type's driver.</summary>
public sealed class SRApi(StorageManager storage, PBDApi pbds, Forwarder forwarder) : ISRApi<CallContext>
{
    private const string PbdPlugMessage = "PBD.plug";

    /// <summary>
    /// Made on the host named (forwarded there in a pool) and plugged there; a shared SR gets a
    /// PBD on every other host of the pool too, each plugged on its host, as on real pools. A host
    /// that cannot plug it keeps its PBD unplugged.
    /// </summary>
    [RunsOn(HostSelection.NamedHost)]
    public async ValueTask<SRRef> Create(CallContext context, HostRef host, ValueMap deviceConfig, long physicalSize, string nameLabel, string nameDescription,
        string type, string contentType, bool shared, ValueMap smConfig)
    {
        context.Snapshot.Get(host);
        var driver = storage.DriverFor(type.ToLowerInvariant());
        var sr = CreateRecord(context, Guid.NewGuid().ToString("D"), nameLabel, nameDescription, type.ToLowerInvariant(), contentType, shared, smConfig);
        var pbd = context.Write(tx => tx.CreatePBD(p =>
        {
            p.Uuid = Guid.NewGuid().ToString("D");
            p.Host = host;
            p.SR = sr;
            p.DeviceConfig = deviceConfig;
        }));
        await context.SettledAsync().ConfigureAwait(false);
        try
        {
            var record = context.Snapshot.Get(sr);
            var created = await storage.RunAsync(sr, () => driver.CreateAsync(storage.ContextOf(record, context.Snapshot.Get(pbd)), physicalSize, context.Cancellation).AsTask()).ConfigureAwait(false);
            if (created is not null)
            {
                context.Write(tx => tx.Update(pbd, p => p.DeviceConfig = SmConfig.Map(created)));
                await context.SettledAsync().ConfigureAwait(false);
            }
        }
        catch
        {
            context.Write(tx =>
            {
                tx.Delete(pbd);
                tx.Delete(sr);
            });
            throw;
        }
        await pbds.PlugAsync(context, pbd).ConfigureAwait(false);
        if (shared)
        {
            await PlugOnEveryOtherHostAsync(context, sr, host, context.Snapshot.Get(pbd).DeviceConfig).ConfigureAwait(false);
        }
        return sr;
    }

    private async Task PlugOnEveryOtherHostAsync(CallContext context, SRRef sr, HostRef made, ValueMap deviceConfig)
    {
        var plug = ApiSchema.MessagesByWireName[PbdPlugMessage];
        foreach (var other in context.Snapshot.All<HostRecord>().Where(h => h.Ref != made).ToList())
        {
            var pbd = context.Write(tx => tx.CreatePBD(p =>
            {
                p.Uuid = Guid.NewGuid().ToString("D");
                p.Host = other.Ref;
                p.SR = sr;
                p.DeviceConfig = deviceConfig;
            }));
            await context.SettledAsync().ConfigureAwait(false);
            try
            {
                await forwarder.ForwardAsync(context.Snapshot, other.Ref, plug, [context.RequiredSession.Value, pbd.Value], context.Cancellation).ConfigureAwait(false);
            }
            catch (XenApiException)
            {
                // Left unplugged, as a real host whose plug fails: PBD.plug on it again, once it can reach the SR.
            }
        }
    }

    public ValueTask<SRRef> Introduce(CallContext context, string uuid, string nameLabel, string nameDescription, string type, string contentType, bool shared, ValueMap smConfig)
    {
        var id = uuid.Length == 0 ? Guid.NewGuid().ToString("D") : uuid;
        return ValueTask.FromResult(CreateRecord(context, id, nameLabel, nameDescription, type.ToLowerInvariant(), contentType, shared, smConfig));
    }

    private static SRRef CreateRecord(CallContext context, string uuid, string nameLabel, string nameDescription, string type, string contentType, bool shared, ValueMap smConfig) =>
        context.Write(tx =>
        {
            if (tx.TryGetByUuid(SRRef.Class, uuid, out _))
            {
                throw XenApiErrors.SrUuidExists(uuid);
            }
            return tx.CreateSR(sr =>
            {
                sr.Uuid = uuid;
                sr.NameLabel = nameLabel;
                sr.NameDescription = nameDescription;
                sr.Type = type;
                sr.ContentType = contentType;
                sr.Shared = shared;
                sr.SmConfig = smConfig;
                sr.PhysicalUtilisation = -1;
                sr.PhysicalSize = -1;
                sr.IntroducedBy = DRTaskRef.Null;
            });
        });

    [RunsAs<StorageOperations>(StorageOperations.Forget)]
    public ValueTask Forget(CallContext context, SRRef sr)
    {
        context.Write(tx =>
        {
            AssertNoPlugged(tx, sr);
            Remove(tx, sr);
        });
        return ValueTask.CompletedTask;
    }

    [RunsAs<StorageOperations>(StorageOperations.Destroy)]
    public async ValueTask Destroy(CallContext context, SRRef sr)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.Get(sr);
        AssertNoPlugged(snapshot, sr);
        if (storage.PbdOf(snapshot, sr) is not { } pbd)
        {
            throw XenApiErrors.SrHasNoPbds(sr.Value);
        }
        if (snapshot.All<VDIRecord>().Any(v => v.SR == sr && v.Managed && v.Type != VdiType.Rrd))
        {
            throw XenApiErrors.SrNotEmpty();
        }
        if (record.OtherConfig.TryGetValue(IndestructibleKey, out var flag) && flag is "true")
        {
            throw XenApiErrors.SrIndestructible(sr.Value);
        }
        var driver = storage.DriverOf(record);
        var driverContext = storage.ContextOf(record, pbd);
        await storage.WhenCollectedAsync(sr).ConfigureAwait(false);
        await storage.RunAsync(sr, async () =>
        {
            await driver.AttachAsync(driverContext, context.Cancellation).ConfigureAwait(false);
            await driver.DeleteAsync(driverContext, context.Cancellation).ConfigureAwait(false);
        }).ConfigureAwait(false);
        context.Write(tx => Remove(tx, sr));
    }

    // Real hosts' other_config key that protects an SR from SR.destroy.
    private const string IndestructibleKey = "indestructible";

    private static void AssertNoPlugged(IRowReader db, SRRef sr)
    {
        db.Get(sr);
        foreach (var pbd in db.All<PBDRecord>())
        {
            if (pbd.SR == sr && pbd.CurrentlyAttached)
            {
                throw XenApiErrors.SrHasPbd(sr.Value);
            }
        }
    }

    private static void Remove(Transaction tx, SRRef sr)
    {
        foreach (var pbd in tx.All<PBDRecord>().Where(p => p.SR == sr).Select(p => p.Ref).ToList())
        {
            tx.Delete(pbd);
        }
        foreach (var vdi in tx.All<VDIRecord>().Where(v => v.SR == sr).Select(v => v.Ref).ToList())
        {
            StorageRecords.Forget(tx, vdi);
        }
        foreach (var pool in tx.All<PoolRecord>().ToList())
        {
            tx.Update(pool.Ref, p =>
            {
                p.DefaultSR = p.DefaultSR == sr ? SRRef.Null : p.DefaultSR;
                p.SuspendImageSR = p.SuspendImageSR == sr ? SRRef.Null : p.SuspendImageSR;
                p.CrashDumpSR = p.CrashDumpSR == sr ? SRRef.Null : p.CrashDumpSR;
            });
        }
        foreach (var host in tx.All<HostRecord>().Where(h => h.SuspendImageSr == sr || h.CrashDumpSr == sr).ToList())
        {
            tx.Update(host.Ref, h =>
            {
                h.SuspendImageSr = h.SuspendImageSr == sr ? SRRef.Null : h.SuspendImageSr;
                h.CrashDumpSr = h.CrashDumpSr == sr ? SRRef.Null : h.CrashDumpSr;
            });
        }
        tx.Delete(sr);
    }

    [RunsOn(HostSelection.StorageHost)]
    [RunsAs<StorageOperations>(StorageOperations.Scan)]
    public async ValueTask Scan(CallContext context, SRRef sr)
    {
        await storage.ScanAsync(sr, context.Cancellation).ConfigureAwait(false);
        storage.RequestCollection(sr);
    }

    public async ValueTask<string> Probe(CallContext context, HostRef host, ValueMap deviceConfig, string type, ValueMap smConfig)
    {
        context.Snapshot.Get(host);
        var driver = storage.DriverFor(type.ToLowerInvariant());
        if (!driver.Description.Has(SmFeatures.SrProbe))
        {
            throw XenApiErrors.SrBackendFailure("Operation 'sr_probe' not supported by this SR type", "", "");
        }
        try
        {
            return await driver.ProbeAsync(storage.ProbeContextOf(deviceConfig, smConfig), context.Cancellation).ConfigureAwait(false);
        }
        catch (SmException e)
        {
            throw StorageManager.ToXenApi(e, SRRef.Null);
        }
    }

    /// <summary>Every driver here speaks SMAPIv1, whose probe answers are free text: real hosts refuse probe_ext for them, with no parameters.</summary>
    public ValueTask<IReadOnlyList<object?>> ProbeExt(CallContext context, HostRef host, ValueMap deviceConfig, string type, ValueMap smConfig)
    {
        context.Snapshot.Get(host);
        storage.DriverFor(type.ToLowerInvariant());
        throw new XenApiException(ErrorCodes.SrOperationNotSupported);
    }

    public async ValueTask Update(CallContext context, SRRef sr)
    {
        var snapshot = context.Snapshot;
        var driverContext = storage.PluggedContext(snapshot, sr);
        var driver = storage.DriverOf(snapshot.Get(sr));
        var stat = await storage.RunAsync(sr, () => driver.StatAsync(driverContext, context.Cancellation).AsTask()).ConfigureAwait(false);
        context.Write(tx => StorageRecords.SetSizes(tx, sr, stat));
    }

    public ValueTask<IReadOnlyList<string>> GetSupportedTypes(CallContext context) =>
        ValueTask.FromResult<IReadOnlyList<string>>(storage.Drivers.Keys.Order(StringComparer.Ordinal).ToList());

    public ValueTask SetShared(CallContext context, SRRef sr, bool value)
    {
        context.Write(tx =>
        {
            tx.Get(sr);
            var pbds = tx.All<PBDRecord>().Where(p => p.SR == sr).Select(p => p.Ref.Value).ToArray();
            if (!value && pbds.Length > 1)
            {
                throw new XenApiException(ErrorCodes.SrHasMultiplePbds, pbds);
            }
            tx.Update(sr, s => s.Shared = value);
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask SetNameLabel(CallContext context, SRRef sr, string value)
    {
        context.Write(tx => tx.Update(sr, s => s.NameLabel = value));
        return ValueTask.CompletedTask;
    }

    public ValueTask SetNameDescription(CallContext context, SRRef sr, string value)
    {
        context.Write(tx => tx.Update(sr, s => s.NameDescription = value));
        return ValueTask.CompletedTask;
    }

    // Real hosts let only the storage manager's own sessions set sizes; here the local root process is that manager.
    public ValueTask SetPhysicalSize(CallContext context, SRRef self, long value) => SetBySm(context, self, s => s.PhysicalSize = value);

    private static ValueTask SetBySm(CallContext context, SRRef sr, Action<SRValues> edit)
    {
        if (!context.FromLocalRoot)
        {
            throw XenApiErrors.PermissionDenied("");
        }
        context.Write(tx => tx.Update(sr, edit));
        return ValueTask.CompletedTask;
    }

    public ValueTask<string> Make(CallContext context, HostRef host, ValueMap deviceConfig, long physicalSize, string nameLabel, string nameDescription, string type, string contentType, ValueMap smConfig) =>
        throw XenApiErrors.MessageDeprecated();
}
