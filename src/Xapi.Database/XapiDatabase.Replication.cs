using Xapi.Database.Replication;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// The pool database across hosts. The master's database is the pool's; each member holds a
/// copy that follows it (<see cref="FollowMaster"/>). A member reads its copy locally, and its
/// writes are committed by the master first: the transaction runs against the member's copy,
/// and the master takes its changed rows only while its own rows still equal what the member
/// started from; otherwise the member catches up and runs the transaction again. Each host keeps
/// its own generations (event tokens are per host); a member remembers the master's generation
/// its copy has reached.
/// </summary>
public sealed partial class XapiDatabase
{
    /// <summary>How often a member's write is tried again when the rows it read kept changing at the master.</summary>
    public const int MaxMemberWriteAttempts = 20;

    private IPoolMasterLink? _master;
    private string _masterEpoch = "";
    private long _masterGeneration;

    /// <summary>
    /// This database's identity as a master, new with each process: a member whose copy came from
    /// another (or a restarted) master gets the whole database again, since this one cannot tell
    /// what that master deleted.
    /// </summary>
    public string Epoch { get; } = NewUuid();

    /// <summary>Whether writes go through a master (this host is a pool member).</summary>
    // Read without the write lock: the master's endpoints ask while a hand-over holds it.
    public bool FollowsMaster => Volatile.Read(ref _master) is not null;

    /// <summary>The master's epoch and generation this member's copy has reached.</summary>
    public (string Epoch, long Generation) MasterPosition
    {
        get
        {
            lock (_writeLock)
            {
                return (_masterEpoch, _masterGeneration);
            }
        }
    }

    /// <summary>
    /// Makes this database a member's copy of the master's: <paramref name="whole"/> (the master's
    /// whole database) replaces what it held, and from now on writes go through <paramref name="master"/>.
    /// </summary>
    public void FollowMaster(IPoolMasterLink master, ReplicaDelta whole)
    {
        if (!whole.Full)
        {
            throw new ArgumentException("a member starts from the master's whole database", nameof(whole));
        }
        lock (_writeLock)
        {
            _masterEpoch = "";
            _masterGeneration = 0;
            ApplyLocked(whole);
            _master = master;
        }
    }

    /// <summary>
    /// Hands the pool's database over to a new master, orderly: under the write lock, so nothing
    /// commits meanwhile, <paramref name="makeMaster"/> has the new master take every change up to
    /// this one and become master; then this database follows it, and the writes that waited go
    /// through it. False when a commit is not yet durable (the caller waits and tries again).
    /// </summary>
    public bool HandOverTo(IPoolMasterLink newMaster, Action makeMaster)
    {
        lock (_writeLock)
        {
            if (_master is not null)
            {
                throw new InvalidOperationException("only a master hands its database over");
            }
            if (_current.Generation != _visible.Generation)
            {
                return false;
            }
            makeMaster();
            var whole = newMaster.ChangesAsync("", 0, TimeSpan.Zero, CancellationToken.None).GetAwaiter().GetResult();
            _masterEpoch = "";
            _masterGeneration = 0;
            ApplyLocked(whole);
            _master = newMaster;
            return true;
        }
    }

    /// <summary>
    /// This member becomes the master over a store that holds the pool's database (its old master's
    /// shared store): <paramref name="whole"/> replaces the copy, and commits go to <paramref name="log"/> from now on.
    /// </summary>
    public void TakeOver(ReplicaDelta whole, IDurableLog log)
    {
        if (!whole.Full)
        {
            throw new ArgumentException("a take-over starts from the whole stored database", nameof(whole));
        }
        lock (_writeLock)
        {
            ApplyLocked(whole);
            _master = null;
            _masterEpoch = "";
            _masterGeneration = 0;
            _log = log;
        }
    }

    /// <summary>Writes are this database's own again (this host becomes a master).</summary>
    public void StopFollowingMaster()
    {
        lock (_writeLock)
        {
            _master = null;
            _masterEpoch = "";
            _masterGeneration = 0;
        }
    }

    /// <summary>
    /// Takes the master's changes into this member's copy. False when they do not fit: older
    /// than the copy, or from a point after it (the caller asks again from <see cref="MasterPosition"/>).
    /// </summary>
    public bool ApplyFromMaster(ReplicaDelta delta)
    {
        lock (_writeLock)
        {
            return ApplyLocked(delta);
        }
    }

    private bool ApplyLocked(ReplicaDelta delta)
    {
        var sameMaster = delta.Epoch == _masterEpoch;
        if (sameMaster && delta.To <= _masterGeneration)
        {
            return false;
        }
        if (!delta.Full && (!sameMaster || delta.From > _masterGeneration))
        {
            return false;
        }
        var tx = new Transaction(_current, _current.Generation + 1, TombstoneLimit);
        if (delta.Full)
        {
            var kept = delta.Rows.Select(r => (r.Class.Ordinal, r.Ref)).ToHashSet();
            foreach (var cls in ApiSchema.Classes)
            {
                foreach (var row in tx.All(cls).Where(r => !kept.Contains((cls.Ordinal, r.Ref))).ToList())
                {
                    tx.Delete(cls, row.Ref);
                }
            }
        }
        foreach (var delete in delta.Deletes)
        {
            if (tx.TryGet(delete.Class, delete.Ref, out _))
            {
                tx.Delete(delete.Class, delete.Ref);
            }
        }
        foreach (var row in delta.Rows)
        {
            Put(tx, row.Class, row.Ref, row.Values);
        }
        CommitLocked(tx);
        _masterEpoch = delta.Epoch;
        _masterGeneration = delta.To;
        return true;
    }

    // A row as the master holds it: created, replaced, or left alone when it is the same already.
    private static void Put(Transaction tx, ClassMeta cls, string reference, object?[] values)
    {
        if (!tx.TryGet(cls, reference, out var existing))
        {
            tx.Create(cls, reference, (object?[])values.Clone());
        }
        else if (!SameValues(existing.Values, values))
        {
            tx.Update(cls, reference, v => Array.Copy(values, v, v.Length));
        }
    }

    private static bool SameValues(IReadOnlyList<object?> a, IReadOnlyList<object?> b) =>
        ReplicationCodec.RowBytes(a).AsSpan().SequenceEqual(ReplicationCodec.RowBytes(b));

    private T WriteThroughMasterLocked<T>(Func<Transaction, T> body)
    {
        for (var attempt = 1; ; attempt++)
        {
            var basis = _current;
            var tx = new Transaction(basis, basis.Generation + 1, TombstoneLimit);
            var result = body(tx);
            if (!tx.HasChanges)
            {
                return result;
            }
            ReplicaCommitReply reply;
            try
            {
                reply = _master!.Commit(ChangesOf(basis, tx), _masterEpoch, _masterGeneration);
            }
            catch (Exception e) when (e is not ReplicaWriteException)
            {
                throw new ReplicaWriteException($"the pool master did not take this write: {e.Message}", e);
            }
            // The master's answer holds this write when it committed: the copy has it before the caller goes on.
            ApplyLocked(reply.Delta);
            if (reply.Committed)
            {
                return result;
            }
            if (attempt == MaxMemberWriteAttempts)
            {
                throw new ReplicaWriteException($"the rows this write read kept changing at the pool master ({attempt} attempts)");
            }
        }
    }

    private static List<RowChange> ChangesOf(DbSnapshot basis, Transaction tx)
    {
        var changes = new List<RowChange>();
        var seen = new HashSet<(int, string)>();
        foreach (var write in tx.Writes)
        {
            if (!seen.Add((write.Class.Ordinal, write.Ref)))
            {
                continue;
            }
            var before = basis.TryGet(write.Class, write.Ref, out var b) ? b.CopyValues() : null;
            var after = tx.TryGet(write.Class, write.Ref, out var a) ? a.CopyValues() : null;
            if (before is not null || after is not null)
            {
                changes.Add(new RowChange(write.Class, write.Ref, before, after));
            }
        }
        return changes;
    }

    /// <summary>
    /// At the master: commits a member's changes if every row still is what the member started
    /// from, waits until the commit is durable, and answers with what the member is missing since
    /// <paramref name="epoch"/>/<paramref name="since"/> (its own changes included).
    /// </summary>
    public async Task<ReplicaCommitReply> CommitFromMemberAsync(IReadOnlyList<RowChange> changes, string epoch, long since, CancellationToken cancellationToken = default)
    {
        var committed = true;
        try
        {
            Write(tx => ApplyMemberChanges(tx, changes));
        }
        catch (MemberChangeConflict)
        {
            committed = false;
        }
        await WhenVisibleAsync(CommittedGeneration, cancellationToken).ConfigureAwait(false);
        return new ReplicaCommitReply(committed, ChangesSince(epoch, since));
    }

    private static void ApplyMemberChanges(Transaction tx, IReadOnlyList<RowChange> changes)
    {
        foreach (var change in changes)
        {
            var exists = tx.TryGet(change.Class, change.Ref, out var current);
            if (change.Before is null ? exists : !exists || !SameValues(current.Values, change.Before))
            {
                throw new MemberChangeConflict();
            }
        }
        // Deletes first, then creates: a row deleted and one made again with its uuid do not collide.
        foreach (var change in changes.Where(c => c.After is null))
        {
            tx.Delete(change.Class, change.Ref);
        }
        foreach (var change in changes.Where(c => c.After is not null))
        {
            if (change.Before is null)
            {
                tx.Create(change.Class, change.Ref, (object?[])change.After!.Clone());
            }
            else if (SameValues(change.Before, change.After!))
            {
                tx.Touch(change.Class, change.Ref);
            }
            else
            {
                tx.Update(change.Class, change.Ref, v => Array.Copy(change.After!, v, v.Length));
            }
        }
    }

    /// <summary>At the master: what a member whose copy reached <paramref name="epoch"/>/<paramref name="since"/> is missing, waiting up to <paramref name="wait"/> for something to change.</summary>
    public async Task<ReplicaDelta> ChangesAsync(string epoch, long since, TimeSpan wait, CancellationToken cancellationToken = default)
    {
        if (epoch == Epoch && wait > TimeSpan.Zero)
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(wait);
            try
            {
                await WhenVisibleAsync(since + 1, limit.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                // Nothing changed within the wait: an empty answer.
            }
        }
        return ChangesSince(epoch, since);
    }

    /// <summary>At the master: what a member whose copy reached <paramref name="epoch"/>/<paramref name="since"/> is missing.</summary>
    public ReplicaDelta ChangesSince(string epoch, long since)
    {
        var snapshot = Snapshot;
        var full = epoch != Epoch || since <= 0 || since > snapshot.Generation
            // Deletes older than the oldest tombstone kept may have been forgotten.
            || (snapshot.TombstoneCount >= TombstoneLimit && snapshot.Tombstones.Peek().Deleted > since);
        var rows = new List<ReplicaRow>();
        var deletes = new List<ReplicaDelete>();
        foreach (var cls in ApiSchema.Classes)
        {
            var changed = full ? snapshot.All(cls) : snapshot.ModifiedSince(cls, since);
            rows.AddRange(changed.Select(r => new ReplicaRow(cls, r.Ref, r.CopyValues())));
        }
        if (!full)
        {
            foreach (var tombstone in snapshot.Tombstones)
            {
                if (tombstone.Deleted > since && !snapshot.Exists(tombstone.Class, tombstone.Ref))
                {
                    deletes.Add(new ReplicaDelete(tombstone.Class, tombstone.Ref));
                }
            }
        }
        return new ReplicaDelta(Epoch, full ? 0 : since, snapshot.Generation, full, rows, deletes);
    }

    private sealed class MemberChangeConflict : Exception;
}
