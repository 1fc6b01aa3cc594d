using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

public sealed class PoolApi(JournalStore? journal) : IPoolApi<CallContext>
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
