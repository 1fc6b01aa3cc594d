using System.Collections.Immutable;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// The pool database: one table per stored class, read through immutable snapshots, written
/// by serialised transactions. Every committed transaction takes the next generation.
/// </summary>
public sealed class XapiDatabase
{
    public const int DefaultTombstoneLimit = 65_536;

    private readonly object _writeLock = new();
    private DbSnapshot _current;

    public XapiDatabase(int tombstoneLimit = DefaultTombstoneLimit)
    {
        TombstoneLimit = tombstoneLimit;
        var classes = ApiSchema.Classes;
        _current = new DbSnapshot(
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

    public DbSnapshot Snapshot => Volatile.Read(ref _current);

    /// <summary>Raised after each commit, inside the write lock, in generation order.</summary>
    public event Action<DbSnapshot>? Committed;

    public T Write<T>(Func<Transaction, T> body)
    {
        lock (_writeLock)
        {
            var tx = new Transaction(_current, _current.Generation + 1, TombstoneLimit);
            var result = body(tx);
            if (tx.HasChanges)
            {
                var next = tx.Build();
                Volatile.Write(ref _current, next);
                Committed?.Invoke(next);
            }
            return result;
        }
    }

    public void Write(Action<Transaction> body) => Write<object?>(tx =>
    {
        body(tx);
        return null;
    });

    public static string NewRef() => "OpaqueRef:" + Guid.NewGuid().ToString("D");

    public static string NewUuid() => Guid.NewGuid().ToString("D");
}
