using Xapi.Model;

namespace Xapi.Database.Replication;

/// <summary>
/// One row as a member's transaction left it, beside the row it started from. The master
/// commits the change only while its own row still equals <see cref="Before"/>, so a member never
/// overwrites a change it has not seen. Null <see cref="Before"/>: the row is new; null
/// <see cref="After"/>: it is deleted; equal values: it is touched (<c>event.inject</c>).
/// </summary>
public sealed record RowChange(ClassMeta Class, string Ref, object?[]? Before, object?[]? After);

/// <summary>A row as the master holds it, sent to a member.</summary>
public sealed record ReplicaRow(ClassMeta Class, string Ref, object?[] Values);

/// <summary>A row the master deleted.</summary>
public sealed record ReplicaDelete(ClassMeta Class, string Ref);

/// <summary>
/// What a member needs to bring its copy of the pool database from the master's generation
/// <see cref="From"/> to <see cref="To"/>: every row created or changed since, in its newest state,
/// and every row deleted since. <see cref="Full"/>: the whole database, and any row a member holds
/// that is not here is gone (the master cannot tell what was deleted since <see cref="From"/>: its
/// memory of deletes was cut short, or it is another master, told by <see cref="Epoch"/>).
/// </summary>
public sealed record ReplicaDelta(string Epoch, long From, long To, bool Full, IReadOnlyList<ReplicaRow> Rows, IReadOnlyList<ReplicaDelete> Deletes);

/// <summary>The master's answer to a member's transaction: whether it committed, and the changes that bring the member up to date.</summary>
public sealed record ReplicaCommitReply(bool Committed, ReplicaDelta Delta);

/// <summary>How a member reaches the master's database (over HTTP with the pool secret, or in-process in tests).</summary>
public interface IPoolMasterLink
{
    /// <summary>
    /// Commits a member's changes at the master, and returns what changed there since
    /// <paramref name="epoch"/>/<paramref name="since"/>. Synchronous: a write holds the member's
    /// write lock until the master has answered.
    /// </summary>
    ReplicaCommitReply Commit(IReadOnlyList<RowChange> changes, string epoch, long since);

    /// <summary>What changed at the master after <paramref name="since"/>, waiting up to <paramref name="wait"/> for a change.</summary>
    Task<ReplicaDelta> ChangesAsync(string epoch, long since, TimeSpan wait, CancellationToken cancellationToken);
}

/// <summary>The master could not reach a decision on a member's write (the master is gone, or the rows kept moving).</summary>
public sealed class ReplicaWriteException(string message, Exception? inner = null) : Exception(message, inner);
