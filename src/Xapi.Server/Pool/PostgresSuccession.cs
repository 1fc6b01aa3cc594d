using Microsoft.Extensions.Logging;
using Xapi.Database.Postgres;

namespace Xapi.Server.Pool;

/// <summary>
/// Master failover for a pool on the PostgreSQL backend, without an HA storage repository. The
/// master holds the store's advisory lock and writes through to it; each member keeps the store
/// at hand, unlocked. A member that cannot reach its master tries the lock: it is free only once
/// the master's database session is gone, which a dead master's is as soon as its connection
/// closes. The first member to take it becomes master over the stored database (every write the
/// old master acknowledged is in it); the others find it taken and follow the master the store
/// names. Real pools without HA wait for an administrator's emergency_transition_to_master.
/// </summary>
public sealed class PostgresSuccession(PostgresStore store, ILogger<PostgresSuccession> logger) : IDisposable
{
    /// <summary>
    /// After the master could not be reached: null when this host took the pool over; otherwise
    /// the address of the master the store names (the same one when it still holds the lock).
    /// </summary>
    public async Task<string?> ResolveAsync(CancellationToken cancellationToken)
    {
        if (await store.TryLockAsync(cancellationToken).ConfigureAwait(false))
        {
            await store.TakeOverAsync(cancellationToken).ConfigureAwait(false);
            return null;
        }
        var master = await store.MasterAddressAsync(cancellationToken).ConfigureAwait(false);
        logger.LogInformation("The pool database's lock is held; the pool names {Master} its master", master);
        return master;
    }

    public void Dispose() => store.Dispose();
}
