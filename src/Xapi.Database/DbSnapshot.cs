using System.Collections.Immutable;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>An immutable view of the whole database at one generation.</summary>
/// <summary>A row's last modification, ordered by generation then ref.</summary>
internal readonly record struct Change(long Generation, string Ref) : IComparable<Change>
{
    public int CompareTo(Change other)
    {
        var byGeneration = Generation.CompareTo(other.Generation);
        return byGeneration != 0 ? byGeneration : string.CompareOrdinal(Ref, other.Ref);
    }
}

public sealed class DbSnapshot : IRowReader
{
    internal DbSnapshot(long generation, ImmutableDictionary<string, Row>[] tables, ImmutableDictionary<string, string>[] uuids,
        ImmutableDictionary<string, ImmutableList<string>>[] relations, ImmutableQueue<Tombstone> tombstones, int tombstoneCount,
        long[] tableGenerations, ImmutableSortedSet<Change>[] changes)
    {
        TableGenerations = tableGenerations;
        Changes = changes;
        Generation = generation;
        Tables = tables;
        Uuids = uuids;
        Relations = relations;
        Tombstones = tombstones;
        TombstoneCount = tombstoneCount;
    }

    public long Generation { get; }

    // Per class: the last generation that created, modified or deleted one of its rows.
    internal long[] TableGenerations { get; }

    // Per class: every row keyed by its last modification, so "what changed since G" costs
    // O(changes) rather than a scan of the table.
    internal ImmutableSortedSet<Change>[] Changes { get; }

    /// <summary>Rows of <paramref name="cls"/> created or modified after <paramref name="generation"/>, newest first.</summary>
    public IEnumerable<Row> ModifiedSince(ClassMeta cls, long generation)
    {
        if (!ChangedSince(cls, generation))
        {
            yield break;
        }
        var table = Tables[cls.Ordinal];
        foreach (var change in Changes[cls.Ordinal].Reverse())
        {
            if (change.Generation <= generation)
            {
                yield break;
            }
            yield return table[change.Ref];
        }
    }

    /// <summary>Whether anything in <paramref name="cls"/> changed after <paramref name="generation"/>.</summary>
    public bool ChangedSince(ClassMeta cls, long generation) => TableGenerations[cls.Ordinal] > generation;

    internal ImmutableDictionary<string, Row>[] Tables { get; }

    internal ImmutableDictionary<string, string>[] Uuids { get; }

    // Indexed by RelationIndex.Ordinal: parent ref -> child refs, in insertion order.
    internal ImmutableDictionary<string, ImmutableList<string>>[] Relations { get; }

    /// <summary>Deletes, oldest first, bounded; older deletes are forgotten.</summary>
    public ImmutableQueue<Tombstone> Tombstones { get; }

    public int TombstoneCount { get; }

    public IEnumerable<Row> All(ClassMeta cls) => Tables[cls.Ordinal].Values;

    public int Count(ClassMeta cls) => Tables[cls.Ordinal].Count;

    public bool TryGet(ClassMeta cls, string reference, out Row row) => Tables[cls.Ordinal].TryGetValue(reference, out row!);

    public Row Get(ClassMeta cls, string reference) =>
        Tables[cls.Ordinal].TryGetValue(reference, out var row) ? row : throw XenApiErrors.HandleInvalid(cls.Name, reference);

    public bool Exists(ClassMeta cls, string reference) => Tables[cls.Ordinal].ContainsKey(reference);

    public Row GetByUuid(ClassMeta cls, string uuid) =>
        Uuids[cls.Ordinal].TryGetValue(uuid, out var reference) ? Tables[cls.Ordinal][reference] : throw XenApiErrors.UuidInvalid(cls.Name, uuid);

    public bool TryGetByUuid(ClassMeta cls, string uuid, out Row row)
    {
        if (Uuids[cls.Ordinal].TryGetValue(uuid, out var reference))
        {
            row = Tables[cls.Ordinal][reference];
            return true;
        }
        row = null!;
        return false;
    }

    /// <summary>A field's value, computing one-to-many "many" sides from the relation index.</summary>
    public object? GetField(Row row, FieldMeta field)
    {
        if (field.ManyOf is not null && RelationIndex.ForManyField(field) is { } relation)
        {
            return Children(relation, row.Ref);
        }
        return row.Values[field.Ordinal];
    }

    public bool TryGetRowValues(ClassMeta cls, string reference, out IReadOnlyList<object?> values)
    {
        var found = TryGet(cls, reference, out var row);
        values = found ? row.Values : ValueSet.Empty;
        return found;
    }

    public IReadOnlyList<object?> GetRowValues(ClassMeta cls, string reference) => Get(cls, reference).Values;

    public IEnumerable<(string Ref, IReadOnlyList<object?> Values)> AllRowValues(ClassMeta cls) => All(cls).Select(static r => (r.Ref, r.Values));

    public IReadOnlyList<object?> ManyField(FieldMeta field, string reference) =>
        RelationIndex.ForManyField(field) is { } relation ? Children(relation, reference) : ValueSet.Empty;

    private IReadOnlyList<object?> Children(RelationIndex relation, string parent)
    {
        var index = Relations[relation.Ordinal];
        // Many relations (crash dumps, VUSBs, ...) have no rows at all; skip hashing the ref for them.
        if (index.IsEmpty || !index.TryGetValue(parent, out var children))
        {
            return ValueSet.Empty;
        }
        var result = new object?[children.Count];
        var i = 0;
        foreach (var child in children)
        {
            result[i++] = child;
        }
        return result;
    }

    /// <summary>The record as clients see it: every field in datamodel order, computed fields included.</summary>
    public RecordValue ToRecord(Row row)
    {
        var relations = RelationIndex.ForParentClass(row.Class);
        if (relations.Count == 0)
        {
            // Rows never change their values array, so the record can share it.
            return new RecordValue(row.Class, (object?[])row.Values);
        }
        var values = row.CopyValues();
        for (var i = 0; i < relations.Count; i++)
        {
            values[relations[i].ManyField.Ordinal] = Children(relations[i], row.Ref);
        }
        return new RecordValue(row.Class, values);
    }
}
