using Microsoft.Extensions.Logging;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Hosting;
using Xapi.Server.Pool;

namespace Xapi.Server.Api;

public sealed partial class PoolApi(JournalStore? journal, PoolMembership membership, FirstBoot firstBoot, ILogger<PoolApi> logger) : IPoolApi<CallContext>
{
    /// <summary>Sends a call on to another host of the pool.</summary>
    public required Xapi.Server.Operations.Forwarder Forwarder { get; init; }

    /// <summary>Replaces this host's database with a fresh pool of its own (after it was ejected).</summary>
    public required Func<Task> StartAfresh { get; init; }

    /// <summary>Writes the whole database to disk now: a snapshot, with the journal started again.</summary>
    public async ValueTask SyncDatabase(CallContext context)
    {
        if (journal is not null)
        {
            await journal.SyncAsync().ConfigureAwait(false);
        }
    }
}
