using Microsoft.Extensions.Logging;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Hosting;
using Xapi.Server.Pool;

namespace Xapi.Server.Api;

public sealed partial class PoolApi(JournalStore? journal, PoolMembership membership, FirstBoot firstBoot, ILogger<PoolApi> logger) : IPoolApi<CallContext>
{
    /// <summary>Writes the whole database to disk now: a snapshot, with the journal started again.</summary>
    public async ValueTask SyncDatabase(CallContext context)
    {
        if (journal is not null)
        {
            await journal.SyncAsync().ConfigureAwait(false);
        }
    }
}
