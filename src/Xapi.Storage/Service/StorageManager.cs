using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;

namespace Xapi.Storage.Service;

/// <summary>
/// This host's storage: the drivers by SR type, the driver context of each SR from its PBD,
/// one lock per SR (driver calls that change an SR's storage run one at a time, as SM's SR
/// lock makes them), the mapping of driver failures to XenAPI errors, and the garbage
/// collector that runs after deletes and scans.
/// </summary>
public sealed class StorageManager : IAsyncDisposable
{
    private readonly XapiDatabase _database;
    private readonly ILogger _logger;
    private readonly string _runtimeDirectory;
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Task> _collectors = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _collectAgain = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();

    public StorageManager(XapiDatabase database, IEnumerable<ISrDriver> drivers, string runtimeDirectory, ILogger<StorageManager> logger)
    {
        _database = database;
        _logger = logger;
        _runtimeDirectory = runtimeDirectory;
        Drivers = drivers.ToDictionary(d => d.Description.Type, StringComparer.Ordinal);
    }

    public IReadOnlyDictionary<string, ISrDriver> Drivers { get; }

    /// <summary>This daemon's host, whose PBDs it plugs.</summary>
    public HostRef ThisHost { get; set; } = HostRef.Null;

    /// <summary>Says whether a VDI is in use (attached, or in an operation); the collector leaves such leaves alone.</summary>
    public Func<DbSnapshot, VDIRecord, bool> InUse { get; set; } = (_, _) => false;

    public ISrDriver DriverFor(string type) =>
        Drivers.TryGetValue(type, out var driver) ? driver : throw XenApiErrors.SrUnknownDriver(type);

    public ISrDriver DriverOf(SRRecord sr) => DriverFor(sr.Type);

    /// <summary>This host's PBD of the SR, if it has one.</summary>
    public PBDRecord? PbdOf(IRowReader db, SRRef sr)
    {
        foreach (var pbd in db.All<PBDRecord>())
        {
            if (pbd.SR == sr && pbd.Host == ThisHost)
            {
                return pbd;
            }
        }
        return null;
    }

    public SrContext ContextOf(SRRecord sr, PBDRecord pbd) =>
        // A short per-SR name: the qemu-nbd sockets under it must fit a Unix socket path.
        new(sr.Uuid, SmConfig.Strings(pbd.DeviceConfig), SmConfig.Strings(sr.SmConfig), Path.Combine(_runtimeDirectory, sr.Uuid[..8]), _logger);

    /// <summary>The context of an SR plugged on this host; SR_HAS_NO_PBDS otherwise, as real hosts answer.</summary>
    public SrContext PluggedContext(IRowReader db, SRRef sr)
    {
        var record = db.Get(sr);
        if (PbdOf(db, sr) is not { CurrentlyAttached: true } pbd)
        {
            throw XenApiErrors.SrHasNoPbds(sr.Value);
        }
        return ContextOf(record, pbd);
    }

    public ProbeContext ProbeContextOf(ValueMap deviceConfig, ValueMap smConfig) =>
        new(SmConfig.Strings(deviceConfig), SmConfig.Strings(smConfig), _logger);

    /// <summary>Runs a driver call under the SR's lock, turning its failures into XenAPI errors.</summary>
    public async Task<T> RunAsync<T>(SRRef sr, Func<Task<T>> call)
    {
        var gate = _locks.GetOrAdd(sr.Value, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync().ConfigureAwait(false);
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (SmException e)
        {
            throw ToXenApi(e, sr);
        }
        catch (SrFullException e)
        {
            throw XenApiErrors.SrFull(Number(e.Requested), Number(e.Available));
        }
        finally
        {
            gate.Release();
        }
    }

    public async Task RunAsync(SRRef sr, Func<Task> call) =>
        await RunAsync(sr, async () =>
        {
            await call().ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);

    private static string Number(long value) => value.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>What real hosts answer for an SM failure (xapi's sm_exec mapping).</summary>
    public static XenApiException ToXenApi(SmException e, SRRef sr) => e.Code switch
    {
        SmErrors.Unimplemented => XenApiErrors.SrOperationNotSupported(sr.Value),
        SmErrors.SrNotEmpty => XenApiErrors.SrNotEmpty(),
        SmErrors.SrInUse => XenApiErrors.SrDeviceInUse(),
        _ => new XenApiException(ErrorCodes.SrBackendFailure + "_" + Number(e.Code), "", e.Message, e.Detail),
    };

    /// <summary>Scans the SR and makes its records match; returns after the database is written.</summary>
    public async Task ScanAsync(SRRef sr, CancellationToken cancellationToken)
    {
        // Writes become visible once durable: the caller's own must be seen here.
        await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken).ConfigureAwait(false);
        var context = PluggedContext(_database.Snapshot, sr);
        var driver = DriverOf(_database.Snapshot.Get(sr));
        await RunAsync(sr, async () =>
        {
            var scan = await driver.ScanAsync(context, cancellationToken).ConfigureAwait(false);
            _database.Write(tx =>
            {
                if (tx.TryGet(sr, out _))
                {
                    StorageRecords.Synchronize(tx, sr, scan);
                }
            });
        }).ConfigureAwait(false);
    }

    /// <summary>Makes a new empty VDI on a plugged SR (imports that bring no VDI of their own).</summary>
    public Task<VDIRef> CreateVdiAsync(SRRef sr, string nameLabel, long virtualSize, CancellationToken cancellationToken) =>
        CreateVdiAsync(sr, new VdiSpec(Guid.NewGuid().ToString("D"), virtualSize, nameLabel, VdiType.User, false, VdiInfo.Empty), null, cancellationToken);

    /// <summary>Asks the SR's driver for a new VDI and records it (VDI.create, imports); <paramref name="describe"/> sets the client's fields.</summary>
    public async Task<VDIRef> CreateVdiAsync(SRRef sr, VdiSpec spec, Action<VDIValues>? describe, CancellationToken cancellationToken)
    {
        await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken).ConfigureAwait(false);
        var snapshot = _database.Snapshot;
        var context = PluggedContext(snapshot, sr);
        var driver = DriverOf(snapshot.Get(sr));
        if (!driver.Description.Has(SmFeatures.VdiCreate))
        {
            throw XenApiErrors.SrOperationNotSupported(sr.Value);
        }
        var info = await RunAsync(sr, () => driver.CreateVdiAsync(context, spec, cancellationToken).AsTask()).ConfigureAwait(false);
        var created = _database.Write(tx =>
        {
            var vdi = StorageRecords.Introduce(tx, sr, info with { NameLabel = spec.NameLabel }, describe);
            StorageRecords.RecomputeAllocation(tx, sr);
            return vdi;
        });
        await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken).ConfigureAwait(false);
        return created;
    }

    /// <summary>Removes a VDI an import made when the import failed.</summary>
    public async Task DiscardVdiAsync(VDIRef vdi)
    {
        await _database.WhenVisibleAsync(_database.CommittedGeneration).ConfigureAwait(false);
        var snapshot = _database.Snapshot;
        if (!snapshot.TryGet(vdi, out var record))
        {
            return;
        }
        var context = PluggedContext(snapshot, record.SR);
        var driver = DriverOf(snapshot.Get(record.SR));
        await RunAsync(record.SR, () => driver.DeleteVdiAsync(context, StorageRecords.InfoOf(record), CancellationToken.None).AsTask()).ConfigureAwait(false);
        _database.Write(tx => StorageRecords.Forget(tx, vdi));
    }

    /// <summary>Starts the SR's collector unless it runs; a running one makes one more pass.</summary>
    public void RequestCollection(SRRef sr)
    {
        _collectAgain[sr.Value] = true;
        _collectors.AddOrUpdate(sr.Value, _ => Task.Run(() => CollectAsync(sr)), (_, running) => running.IsCompleted ? Task.Run(() => CollectAsync(sr)) : running);
    }

    /// <summary>Completes when the SR's collector has nothing left to do (tests and SR detach wait for it).</summary>
    public async Task WhenCollectedAsync(SRRef sr)
    {
        while (_collectors.TryGetValue(sr.Value, out var running) && !running.IsCompleted)
        {
            await running.ConfigureAwait(false);
        }
    }

    private async Task CollectAsync(SRRef sr)
    {
        try
        {
            while (_collectAgain.TryRemove(sr.Value, out _))
            {
                while (!_stopping.IsCancellationRequested)
                {
                    await _database.WhenVisibleAsync(_database.CommittedGeneration, _stopping.Token).ConfigureAwait(false);
                    var snapshot = _database.Snapshot;
                    if (!snapshot.TryGet(sr, out var record) || PbdOf(snapshot, sr) is not { CurrentlyAttached: true })
                    {
                        return;
                    }
                    var context = PluggedContext(snapshot, sr);
                    var driver = DriverOf(record);
                    var step = await RunAsync(sr, async () =>
                    {
                        var inUse = _database.Snapshot;
                        var byUuid = inUse.All<VDIRecord>().Where(v => v.SR == sr).ToDictionary(v => v.Uuid, StringComparer.Ordinal);
                        var done = await driver.CollectGarbageAsync(context, uuid => byUuid.TryGetValue(uuid, out var vdi) && InUse(inUse, vdi), _stopping.Token).ConfigureAwait(false);
                        if (done.Kind is not (GcStepKind.Idle or GcStepKind.Deferred))
                        {
                            var scan = await driver.ScanAsync(context, _stopping.Token).ConfigureAwait(false);
                            _database.Write(tx => StorageRecords.Synchronize(tx, sr, scan));
                        }
                        return done;
                    }).ConfigureAwait(false);
                    if (step.Kind is GcStepKind.Idle or GcStepKind.Deferred)
                    {
                        break;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _logger.LogError(e, "Garbage collection of SR {Sr} stopped", sr.Value);
        }
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var collector in _collectors.Values)
        {
            try
            {
                await collector.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }
}
