using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Hosting;

namespace Xapi.Server.Api;

/// <summary>
/// What a host must be to join a pool, checked in the real server's order against its own
/// database and the pool's (read whole from the master before anything changes). Checks of
/// features this daemon does not have (HA, clustering, bonds, tunnels, SR-IOV, VLANs, external
/// auth, licensing, certificates, updates) have nothing to find and are left out.
/// </summary>
internal static class JoinChecks
{
    private const string CannotJoinItself = "Host cannot become slave of itself";
    private const string AlreadyInAPool = "Host is already part of a pool";
    private const string SoftwareDiffers = "Software version differs";
    private const string CpusDiffer = "CPUs differ";
    private const string CpuVendorKey = "vendor";

    public static void Assert(DbSnapshot mine, HostRef me, DbSnapshot pool, bool force)
    {
        var poolRecord = pool.All<PoolRecord>().Single();
        var master = pool.Get(poolRecord.Master);
        var myHost = mine.Get(me);
        if (master.Uuid == myHost.Uuid)
        {
            throw XenApiErrors.OperationNotAllowed(CannotJoinItself);
        }
        if (mine.All<HostRecord>().Skip(1).Any())
        {
            throw XenApiErrors.OperationNotAllowed(AlreadyInAPool);
        }
        var guests = mine.All<VMRecord>().Where(v => !v.IsControlDomain && !v.IsATemplate && !v.IsASnapshot).ToList();
        if (guests.Any(v => v.PowerState == VmPowerState.Running))
        {
            throw XenApiErrors.JoiningHostCannotHaveRunningVms();
        }
        if (mine.All<VMRecord>().Any(v => v.CurrentOperations.Count > 0))
        {
            throw XenApiErrors.JoiningHostCannotHaveVmsWithCurrentOperations();
        }
        if (Version(myHost, SoftwareVersionKeys.PlatformVersion) != Version(master, SoftwareVersionKeys.PlatformVersion)
            || Brand(myHost) != Brand(master))
        {
            throw XenApiErrors.HostsNotCompatible();
        }
        if (!force)
        {
            if (Version(myHost, SoftwareVersionKeys.Xapi) != Version(master, SoftwareVersionKeys.Xapi)
                || Version(myHost, SoftwareVersionKeys.ProductVersion) != Version(master, SoftwareVersionKeys.ProductVersion))
            {
                throw XenApiErrors.HostsNotHomogeneous(SoftwareDiffers);
            }
            if (Key(myHost.CpuInfo, CpuVendorKey) != Key(poolRecord.CpuInfo, CpuVendorKey) && Key(poolRecord.CpuInfo, CpuVendorKey).Length > 0)
            {
                throw XenApiErrors.HostsNotHomogeneous(CpusDiffer);
            }
        }
        if (mine.All<SRRecord>().Any(s => s.Shared && !s.IsToolsSr))
        {
            throw XenApiErrors.JoiningHostCannotContainSharedSrs();
        }
        if (myHost.APIVersionMajor != master.APIVersionMajor || myHost.APIVersionMinor != master.APIVersionMinor)
        {
            throw XenApiErrors.PoolJoiningHostMustHaveSameApiVersion(ApiVersion(myHost), ApiVersion(master));
        }
        var mySchema = Version(myHost, SoftwareVersionKeys.DbSchema);
        var poolSchema = Version(master, SoftwareVersionKeys.DbSchema);
        if (mySchema.Length == 0 || mySchema != poolSchema)
        {
            throw XenApiErrors.PoolJoiningHostMustHaveSameDbSchema(mySchema, poolSchema);
        }
        foreach (var poolSm in pool.All<SMRecord>())
        {
            var candidates = mine.All<SMRecord>().Where(s => s.Type == poolSm.Type).ToList();
            if (candidates.Count != 1)
            {
                throw XenApiErrors.PoolJoiningSmFeaturesIncompatible(poolSm.Ref.Value, "");
            }
            if (!HasFeatures(candidates[0].Features, poolSm.Features))
            {
                throw XenApiErrors.PoolJoiningSmFeaturesIncompatible(poolSm.Ref.Value, candidates[0].Ref.Value);
            }
        }
    }

    private static string Version(HostRecord host, string key) => Key(host.SoftwareVersion, key);

    private static string Brand(HostRecord host) =>
        Version(host, SoftwareVersionKeys.ProductBrand) is { Length: > 0 } brand ? brand : Version(host, SoftwareVersionKeys.PlatformName);

    private static string Key(ValueMap map, string key) => map.TryGetValue(key, out var value) ? XType.ToDisplayString(value) : "";

    private static string ApiVersion(HostRecord host) => $"{host.APIVersionMajor}.{host.APIVersionMinor}";

    // Every feature the pool's driver has, at its version or newer.
    private static bool HasFeatures(ValueMap candidate, ValueMap required) =>
        required.All(f => candidate.TryGetValue(f.Key, out var version) && version is long have && f.Value is long need && have >= need);
}
