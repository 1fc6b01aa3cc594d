using System.Collections.Immutable;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// Where committed transactions go to become durable. Called under the write lock, in
/// generation order; reports back through <see cref="XapiDatabase.MarkDurable"/>.
/// </summary>
public interface IDurableLog
{
    void Append(DbSnapshot committed, IReadOnlyList<RowWrite> operations);

    /// <summary>Why writes cannot be made durable right now; null when all is well.</summary>
    string? Unavailable => null;
}

/// <summary>
/// The pool database: one table per stored class, read through immutable snapshots, written
/// by serialised transactions. Every committed transaction takes the next generation. With a
/// durable log attached, readers see a transaction only once it is durable.
/// </summary>
public sealed partial class XapiDatabase
{
    public const int DefaultTombstoneLimit = 65_536;

    /// <summary>Classes whose rows live only as long as the daemon: they are never written to disk.</summary>
    public static readonly IReadOnlySet<string> TransientClasses = new HashSet<string>(["session", "task"]);

    private readonly object _writeLock = new();
    private DbSnapshot _current;
    private DbSnapshot _visible;
    private IDurableLog? _log;
    private TaskCompletionSource _visibleChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public XapiDatabase(int tombstoneLimit = DefaultTombstoneLimit)
    {
        TombstoneLimit = tombstoneLimit;
        var classes = ApiSchema.Classes;
        _current = _visible = new DbSnapshot(
            0,
            classes.Select(_ => ImmutableDictionary.Create<string, Row>(StringComparer.Ordinal)).ToArray(),
            classes.Select(_ => ImmutableDictionary.Create<string, string>(StringComparer.Ordinal)).ToArray(),
            RelationIndex.All.Select(_ => ImmutableDictionary.Create<string, ImmutableList<string>>(StringComparer.Ordinal)).ToArray(),
            ImmutableQueue<Tombstone>.Empty,
            0,
            new long[classes.Length],
            classes.Select(_ => ImmutableSortedSet<Change>.Empty).ToArray());
    }

    public int TombstoneLimit { get; }

    /// <summary>What readers see: every transaction that is committed and, with a log, durable.</summary>
    public DbSnapshot Snapshot => Volatile.Read(ref _visible);

    /// <summary>The newest committed generation, durable or not yet.</summary>
    public long CommittedGeneration
    {
        get
        {
            lock (_writeLock)
            {
                return _current.Generation;
            }
        }
    }

    /// <summary>Raised when the visible snapshot advances, in generation order.</summary>
    public event Action<DbSnapshot>? Committed;

    public static bool IsTransient(ClassMeta cls) => TransientClasses.Contains(cls.Name);

    /// <summary>Why writes are not becoming durable (the store is unreachable); null when they are.</summary>
    public string? DurabilityProblem => _log?.Unavailable;

    /// <summary>From now on every commit goes to <paramref name="log"/> and is visible once durable.</summary>
    public void AttachLog(IDurableLog log)
    {
        lock (_writeLock)
        {
            _log = log;
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> as one transaction. On a pool member the changes are committed
    /// by the master first (see <see cref="FollowMaster"/>), and the body may run again when the
    /// rows it changed moved on at the master meanwhile.
    /// </summary>
    public T Write<T>(Func<Transaction, T> body)
    {
        lock (_writeLock)
        {
            if (_master is not null)
            {
                return WriteThroughMasterLocked(body);
            }
            var tx = new Transaction(_current, _current.Generation + 1, TombstoneLimit);
            var result = body(tx);
            CommitLocked(tx);
            return result;
        }
    }

    private void CommitLocked(Transaction tx)
    {
        if (!tx.HasChanges)
        {
            return;
        }
        var next = tx.Build();
        _current = next;
        WriteTracking.Record(next.Generation);
        if (_log is null)
        {
            Publish(next);
        }
        else
        {
            _log.Append(next, tx.Writes);
        }
    }

    public void Write(Action<Transaction> body) => Write<object?>(tx =>
    {
        body(tx);
        return null;
    });

    /// <summary>Called by the durable log once everything up to <paramref name="durable"/> is on disk.</summary>
    public void MarkDurable(DbSnapshot durable)
    {
        lock (_writeLock)
        {
            if (durable.Generation > _visible.Generation)
            {
                Publish(durable);
            }
        }
    }

    // Under the write lock, so readers and event listeners see generations in order.
    private void Publish(DbSnapshot snapshot)
    {
        Volatile.Write(ref _visible, snapshot);
        Committed?.Invoke(snapshot);
        Interlocked.Exchange(ref _visibleChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Completes once readers can see generation <paramref name="generation"/>: for a write, once it is durable.</summary>
    public async ValueTask WhenVisibleAsync(long generation, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var changed = Volatile.Read(ref _visibleChanged).Task;
            if (Snapshot.Generation >= generation)
            {
                return;
            }
            await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Applies saved state (a snapshot's rows, or a journal record) at its original generation,
    /// without sending it back to the log.
    /// </summary>
    public void Load(long generation, Action<Transaction> apply)
    {
        lock (_writeLock)
        {
            if (generation <= _current.Generation)
            {
                throw new InvalidOperationException($"generation {generation} is not after {_current.Generation}");
            }
            var tx = new Transaction(_current, generation, TombstoneLimit);
            apply(tx);
            var next = tx.Build();
            _current = next;
            Publish(next);
        }
    }

    public static string NewRef() => "OpaqueRef:" + Guid.NewGuid().ToString("D");

    public static string NewUuid() => Guid.NewGuid().ToString("D");
}

/// <summary>
/// Remembers the newest generation a call wrote, so the server can hold the reply until that
/// write is durable. The scope flows with the call's async context.
/// </summary>
public static class WriteTracking
{
    private static readonly AsyncLocal<Scope?> Current = new();

    public sealed class Scope : IDisposable
    {
        private readonly Scope? _outer;
        private long _generation;

        internal Scope(Scope? outer) => _outer = outer;

        public long Generation => Interlocked.Read(ref _generation);

        internal void Record(long generation)
        {
            long seen;
            while ((seen = Interlocked.Read(ref _generation)) < generation && Interlocked.CompareExchange(ref _generation, generation, seen) != seen)
            {
            }
        }

        public void Dispose() => Current.Value = _outer;
    }

    public static Scope Begin() => Current.Value = new Scope(Current.Value);

    internal static void Record(long generation) => Current.Value?.Record(generation);
}
