using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Storage;
using Xapi.Storage.Drivers.Ext;
using Xapi.Storage.Drivers.Iso;
using Xapi.Storage.Service;

namespace Xapi.Server.Hosting;

/// <summary>
/// Storage at start-up, as SM's storage-init and xapi's start do it on real hosts: the SM
/// records say what the drivers of this build can do (brought up to date at every start); first
/// boot makes the local SR, an ISO library and the removable-media SRs, and makes the local SR
/// the pool's default; every start plugs this host's PBDs, finishing what a crash interrupted.
/// </summary>
public sealed class StorageBoot(FirstBoot firstBoot, StorageManager storage, ServerOptions options, ILogger<StorageBoot> logger)
{
    // Real hosts' i18n keys, which GUIs use to name these SRs in the user's language.
    private const string I18nKey = "i18n-key";
    private const string UdevLocationKey = "location";
    private const string UdevTypeKey = "type";

    public static void SynchronizeSmRecords(XapiDatabase database, IEnumerable<ISrDriver> drivers, FirstBoot firstBoot) => database.Write(tx =>
    {
        var wanted = drivers.Select(d => d.Description).ToDictionary(d => d.Type, StringComparer.Ordinal);
        foreach (var sm in tx.All<SMRecord>().ToList())
        {
            if (!wanted.ContainsKey(sm.Type))
            {
                tx.Delete(sm.Ref);
            }
        }
        foreach (var description in wanted.Values)
        {
            var existing = tx.All<SMRecord>().Where(s => s.Type == description.Type).Select(s => (SMRef?)s.Ref).FirstOrDefault();
            if (existing is null)
            {
                tx.CreateSM(sm => Describe(sm, description, firstBoot.StableUuid("sm/" + description.Type)), new SMRef(firstBoot.StableRef("sm/" + description.Type)));
            }
            else
            {
                tx.Update(existing.Value, sm => Describe(sm, description, sm.Uuid));
            }
        }
    });

    private static void Describe(SMValues sm, SmDescription description, string uuid)
    {
        sm.Uuid = uuid;
        sm.NameLabel = description.NameLabel;
        sm.NameDescription = description.NameDescription;
        sm.Type = description.Type;
        sm.Vendor = description.Vendor;
        sm.Copyright = SmDescription.Copyright;
        sm.Version = SmDescription.DriverVersion;
        sm.RequiredApiVersion = description.RequiredApiVersion;
        sm.Configuration = SmConfig.Map(description.Configuration);
        var features = description.Features.OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
        sm.Capabilities = features.Select(f => f.Name).ToArray();
        sm.Features = ValueMap.FromPairs(features.Select(f => new KeyValuePair<object, object?>(f.Name, f.Version)));
        sm.DriverFilename = "";
        sm.RequiredClusterStack = [];
        sm.SupportedImageFormats = [];
    }

    /// <summary>
    /// Records first boot's SRs (not yet made on disk: <see cref="PlugAllAsync"/> makes what is
    /// missing). <paramref name="madeOnDisk"/>: they are on disk already (a host ejected from a
    /// pool starts afresh over the SRs it had), so plugging attaches them as they are.
    /// </summary>
    public void Populate(XapiDatabase database, bool madeOnDisk = false)
    {
        var host = new HostRef(firstBoot.HostRef);
        var local = NewSr(database, "local", "Local storage", "", "ext", "user", [new(I18nKey, "local-storage")],
            [new(ExtDriver.LocationKey, LocalSrPath)], [], madeOnDisk);
        NewSr(database, "iso", "ISO library", "ISO images in a local directory", "iso", "iso", [new(I18nKey, "iso-library")],
            [new(IsoDriver.LocationKey, IsoSrPath), new(IsoDriver.LegacyModeKey, "true")], [], madeOnDisk);
        NewSr(database, "removable", "Removable storage", "", "udev", "disk", [new(I18nKey, "local-hotplug-disk")],
            [new(UdevLocationKey, "/dev/xapi/block")], [new(UdevTypeKey, "block")], madeOnDisk);
        NewSr(database, "dvd", "DVD drives", "Physical DVD drives", "udev", "iso", [new(I18nKey, "local-hotplug-cd")],
            [new(UdevLocationKey, "/dev/xapi/cd")], [new(UdevTypeKey, "cd")], madeOnDisk);
        database.Write(tx =>
        {
            tx.Update(new PoolRef(firstBoot.PoolRef), pool => pool.DefaultSR = local);
            tx.Update(host, h =>
            {
                h.SuspendImageSr = local;
                h.CrashDumpSr = local;
            });
        });
    }

    private string LocalSrPath => Path.GetFullPath(options.LocalSrPath ?? Path.Combine(options.DataDir, "sr"));

    private string IsoSrPath => Path.GetFullPath(options.IsoSrPath ?? Path.Combine(options.DataDir, "iso"));

    private SRRef NewSr(XapiDatabase database, string key, string name, string description, string type, string contentType,
        KeyValuePair<string, string>[] otherConfig, KeyValuePair<string, string>[] deviceConfig, KeyValuePair<string, string>[] smConfig, bool madeOnDisk) =>
        database.Write(tx =>
        {
            var sr = tx.CreateSR(s =>
            {
                s.Uuid = firstBoot.StableUuid("sr/" + key);
                s.NameLabel = name;
                s.NameDescription = description;
                s.Type = type;
                s.ContentType = contentType;
                s.OtherConfig = SmConfig.Map(otherConfig);
                s.SmConfig = SmConfig.Map(smConfig);
                s.PhysicalSize = -1;
                s.PhysicalUtilisation = -1;
                s.IntroducedBy = DRTaskRef.Null;
            }, new SRRef(firstBoot.StableRef("sr/" + key)));
            tx.CreatePBD(p =>
            {
                p.Uuid = firstBoot.StableUuid("pbd/" + key);
                p.Host = new HostRef(firstBoot.HostRef);
                p.SR = sr;
                p.DeviceConfig = SmConfig.Map(deviceConfig);
                // Made on disk by the first plug.
                p.OtherConfig = madeOnDisk ? ValueMap.Empty : SmConfig.Map([new(NeedsCreateKey, "true")]);
            }, new PBDRef(firstBoot.StableRef("pbd/" + key)));
            return sr;
        });

    // other_config mark of a first-boot PBD whose SR is not yet made on disk.
    private const string NeedsCreateKey = "xapi-dotnet-create";

    /// <summary>Plugs every PBD of this host; one that fails stays unplugged, logged, as on real hosts.</summary>
    public async Task PlugAllAsync(XapiDatabase database, CancellationToken cancellationToken)
    {
        var host = new HostRef(firstBoot.HostRef);
        // Attached flags are from before the restart; plugging makes them true again.
        database.Write(tx =>
        {
            foreach (var pbd in tx.All<PBDRecord>().Where(p => p.Host == host && p.CurrentlyAttached).ToList())
            {
                tx.Update(pbd.Ref, p => p.CurrentlyAttached = false);
            }
        });
        foreach (var pbd in database.Snapshot.All<PBDRecord>().Where(p => p.Host == host).ToList())
        {
            var sr = database.Snapshot.Get(pbd.SR);
            try
            {
                var driver = storage.DriverOf(sr);
                var context = storage.ContextOf(sr, pbd);
                await storage.RunAsync(pbd.SR, async () =>
                {
                    if (pbd.OtherConfig.ContainsKey(NeedsCreateKey))
                    {
                        await driver.CreateAsync(context, 0, cancellationToken).ConfigureAwait(false);
                        database.Write(tx => tx.Update(pbd.Ref, p => p.OtherConfig = p.OtherConfig.Without(NeedsCreateKey)));
                    }
                    await driver.AttachAsync(context, cancellationToken).ConfigureAwait(false);
                    var scan = await driver.ScanAsync(context, cancellationToken).ConfigureAwait(false);
                    database.Write(tx =>
                    {
                        tx.Update(pbd.Ref, p => p.CurrentlyAttached = true);
                        StorageRecords.Synchronize(tx, pbd.SR, scan);
                    });
                }).ConfigureAwait(false);
                storage.RequestCollection(pbd.SR);
            }
            catch (Exception e) when (e is XenApiException or IOException or UnauthorizedAccessException)
            {
                logger.LogWarning(e, "SR {Sr} ({Name}) could not be plugged; it stays unplugged", sr.Uuid, sr.NameLabel);
            }
        }
    }
}
