using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Server.Messages;

public sealed class PoolMessages(JournalStore? journal) : IPoolMessages
{
    /// <summary>Writes the whole database to disk now: a snapshot, with the journal started again.</summary>
    public async ValueTask<object?> SyncDatabase(CallContext callContext)
    {
        if (journal is not null)
        {
            await journal.SyncAsync().ConfigureAwait(false);
        }
        return null;
    }
}
