using System.Collections.Immutable;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// A write in progress. Reads see the transaction's own writes. Nothing is visible to others
/// until the body returns; an exception abandons every change.
/// </summary>
public sealed class Transaction : IRowWriter
{
    private readonly DbSnapshot _base;
    private readonly int _tombstoneLimit;
    private readonly ImmutableDictionary<string, Row>.Builder?[] _tables;
    private readonly ImmutableDictionary<string, string>.Builder?[] _uuids;
    private readonly ImmutableDictionary<string, ImmutableList<string>>.Builder?[] _relations;
    private readonly ImmutableSortedSet<Change>.Builder?[] _changes;
    private readonly List<RowWrite> _writes = [];
    private ImmutableQueue<Tombstone> _tombstones;
    private int _tombstoneCount;

    internal Transaction(DbSnapshot snapshot, long generation, int tombstoneLimit)
    {
        _base = snapshot;
        Generation = generation;
        _tombstoneLimit = tombstoneLimit;
        _tables = new ImmutableDictionary<string, Row>.Builder?[snapshot.Tables.Length];
        _uuids = new ImmutableDictionary<string, string>.Builder?[snapshot.Uuids.Length];
        _relations = new ImmutableDictionary<string, ImmutableList<string>>.Builder?[snapshot.Relations.Length];
        _changes = new ImmutableSortedSet<Change>.Builder?[snapshot.Changes.Length];
        _tombstones = snapshot.Tombstones;
        _tombstoneCount = snapshot.TombstoneCount;
    }

    /// <summary>What the transaction did, in order, for the journal.</summary>
    public IReadOnlyList<RowWrite> Writes => _writes;

    /// <summary>The generation this transaction will commit as.</summary>
    public long Generation { get; }

    public bool HasChanges { get; private set; }

    private ImmutableDictionary<string, Row>.Builder Table(ClassMeta cls) =>
        _tables[cls.Ordinal] ??= _base.Tables[cls.Ordinal].ToBuilder();

    private IReadOnlyDictionary<string, Row> ReadTable(ClassMeta cls) =>
        (IReadOnlyDictionary<string, Row>?)_tables[cls.Ordinal] ?? _base.Tables[cls.Ordinal];

    private ImmutableDictionary<string, string>.Builder UuidIndex(ClassMeta cls) =>
        _uuids[cls.Ordinal] ??= _base.Uuids[cls.Ordinal].ToBuilder();

    private ImmutableDictionary<string, ImmutableList<string>>.Builder Relation(RelationIndex relation) =>
        _relations[relation.Ordinal] ??= _base.Relations[relation.Ordinal].ToBuilder();

    private ImmutableSortedSet<Change>.Builder Changes(ClassMeta cls) =>
        _changes[cls.Ordinal] ??= _base.Changes[cls.Ordinal].ToBuilder();

    // Every row store goes through here, so the change index always matches the table.
    private void Store(ClassMeta cls, Row? before, Row after)
    {
        var changes = Changes(cls);
        if (before is not null)
        {
            changes.Remove(new Change(before.Modified, before.Ref));
        }
        changes.Add(new Change(after.Modified, after.Ref));
        Table(cls)[after.Ref] = after;
    }

    public bool TryGet(ClassMeta cls, string reference, out Row row) => ReadTable(cls).TryGetValue(reference, out row!);

    public Row Get(ClassMeta cls, string reference) =>
        ReadTable(cls).TryGetValue(reference, out var row) ? row : throw XenApiErrors.HandleInvalid(cls.Name, reference);

    public IEnumerable<Row> All(ClassMeta cls) => ReadTable(cls).Values;

    public int Count(ClassMeta cls) => ReadTable(cls).Count;

    public bool TryGetByUuid(ClassMeta cls, string uuid, out Row row)
    {
        var index = (IReadOnlyDictionary<string, string>?)_uuids[cls.Ordinal] ?? _base.Uuids[cls.Ordinal];
        if (index.TryGetValue(uuid, out var reference))
        {
            row = ReadTable(cls)[reference];
            return true;
        }
        row = null!;
        return false;
    }

    /// <summary>
    /// Inserts an object. Fields not given take their datamodel defaults; a missing uuid is
    /// generated. Values must already be canonical runtime values.
    /// </summary>
    public Row Create(ClassMeta cls, IReadOnlyDictionary<string, object?> values, string? reference = null)
    {
        var row = new object?[cls.Fields.Count];
        for (var i = 0; i < row.Length; i++)
        {
            var field = cls.Fields[i];
            row[i] = values.TryGetValue(field.Name, out var v) ? v : field.DefaultValue;
        }
        return Create(cls, reference ?? XapiDatabase.NewRef(), row);
    }

    /// <summary>
    /// Inserts a row with all its values given, in field order (a restore, or a typed create);
    /// the transaction takes the array over. An empty uuid is generated.
    /// </summary>
    public Row Create(ClassMeta cls, string reference, object?[] row)
    {
        if (ReadTable(cls).ContainsKey(reference))
        {
            throw XenApiErrors.DbUniquenessConstraintViolation(cls.Name, "_ref", reference);
        }
        if (cls.UuidField is { } uuidField)
        {
            if (row[uuidField.Ordinal] is not string uuid || uuid.Length == 0)
            {
                row[uuidField.Ordinal] = uuid = XapiDatabase.NewUuid();
            }
            var uuids = UuidIndex(cls);
            if (uuids.ContainsKey(uuid))
            {
                throw XenApiErrors.DbUniquenessConstraintViolation(cls.Name, "uuid", uuid);
            }
            uuids[uuid] = reference;
        }
        var created = new Row(cls, reference, row, Generation, Generation);
        Store(cls, null, created);
        _writes.Add(new RowWrite(RowWriteKind.Create, cls, reference, null));
        foreach (var relation in RelationIndex.ForChildClass(cls))
        {
            Link(relation, row[relation.PointerField.Ordinal] as string, reference);
        }
        HasChanges = true;
        return created;
    }

    public bool TryGetRowValues(ClassMeta cls, string reference, out IReadOnlyList<object?> values)
    {
        var found = TryGet(cls, reference, out var row);
        values = found ? row.Values : ValueSet.Empty;
        return found;
    }

    public IReadOnlyList<object?> GetRowValues(ClassMeta cls, string reference) => Get(cls, reference).Values;

    public IEnumerable<(string Ref, IReadOnlyList<object?> Values)> AllRowValues(ClassMeta cls) => All(cls).Select(static r => (r.Ref, r.Values));

    public IReadOnlyList<object?> ManyField(FieldMeta field, string reference)
    {
        if (RelationIndex.ForManyField(field) is not { } relation)
        {
            return ValueSet.Empty;
        }
        var index = (IReadOnlyDictionary<string, ImmutableList<string>>?)_relations[relation.Ordinal] ?? _base.Relations[relation.Ordinal];
        return index.TryGetValue(reference, out var children) ? children.ToArray<object?>() : ValueSet.Empty;
    }

    public string CreateRow(ClassMeta cls, Action<object?[]> init, string? reference = null)
    {
        var values = new object?[cls.Fields.Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = cls.Fields[i].DefaultValue;
        }
        init(values);
        return Create(cls, reference ?? XapiDatabase.NewRef(), values).Ref;
    }

    public void UpdateRow(ClassMeta cls, string reference, Action<object?[]> edit) => Update(cls, reference, edit);

    public void DeleteRow(ClassMeta cls, string reference) => Delete(cls, reference);

    public void Set(ClassMeta cls, string reference, FieldMeta field, object? value) =>
        Update(cls, reference, values => values[field.Ordinal] = value);

    /// <summary>Replaces a row with an edited copy of its values.</summary>
    public Row Update(ClassMeta cls, string reference, Action<object?[]> edit)
    {
        var old = Get(cls, reference);
        var values = old.CopyValues();
        edit(values);
        if (cls.UuidField is { } uuidField && !Equals(values[uuidField.Ordinal], old.Values[uuidField.Ordinal]))
        {
            var uuids = UuidIndex(cls);
            var uuid = (string)values[uuidField.Ordinal]!;
            if (uuids.ContainsKey(uuid))
            {
                throw XenApiErrors.DbUniquenessConstraintViolation(cls.Name, "uuid", uuid);
            }
            uuids.Remove((string)old.Values[uuidField.Ordinal]!);
            uuids[uuid] = reference;
        }
        foreach (var relation in RelationIndex.ForChildClass(cls))
        {
            var before = old.Values[relation.PointerField.Ordinal] as string;
            var after = values[relation.PointerField.Ordinal] as string;
            if (before != after)
            {
                Unlink(relation, before, reference);
                Link(relation, after, reference);
            }
        }
        var updated = old.With(values, Generation);
        Store(cls, Get(cls, reference), updated);
        List<int>? changed = null;
        for (var i = 0; i < values.Length; i++)
        {
            if (!ReferenceEquals(values[i], old.Values[i]) && !Equals(values[i], old.Values[i]))
            {
                (changed ??= []).Add(i);
            }
        }
        _writes.Add(new RowWrite(RowWriteKind.Update, cls, reference, changed ?? []));
        HasChanges = true;
        return updated;
    }

    /// <summary>Marks a row modified at this generation without changing it (<c>event.inject</c>).</summary>
    public void Touch(ClassMeta cls, string reference)
    {
        var old = Get(cls, reference);
        Store(cls, old, old.Touch(Generation));
        _writes.Add(new RowWrite(RowWriteKind.Touch, cls, reference, null));
        HasChanges = true;
    }

    public void Delete(ClassMeta cls, string reference)
    {
        var old = Get(cls, reference);
        Table(cls).Remove(reference);
        Changes(cls).Remove(new Change(old.Modified, old.Ref));
        if (cls.UuidField is { } uuidField)
        {
            UuidIndex(cls).Remove((string)old.Values[uuidField.Ordinal]!);
        }
        foreach (var relation in RelationIndex.ForChildClass(cls))
        {
            Unlink(relation, old.Values[relation.PointerField.Ordinal] as string, reference);
        }
        _writes.Add(new RowWrite(RowWriteKind.Delete, cls, reference, null));
        _tombstones = _tombstones.Enqueue(new Tombstone(cls, reference, old.Created, Generation, old.Uuid));
        if (++_tombstoneCount > _tombstoneLimit)
        {
            _tombstones = _tombstones.Dequeue();
            _tombstoneCount--;
        }
        HasChanges = true;
    }

    /// <summary>
    /// Puts back a row exactly as it was saved (generations included), without counting as a
    /// change: used when loading a snapshot.
    /// </summary>
    public void Restore(ClassMeta cls, string reference, object?[] values, long created, long modified)
    {
        var row = new Row(cls, reference, values, created, modified);
        Changes(cls).Add(new Change(modified, reference));
        Table(cls)[reference] = row;
        if (cls.UuidField is { } uuidField && values[uuidField.Ordinal] is string uuid)
        {
            UuidIndex(cls)[uuid] = reference;
        }
        foreach (var relation in RelationIndex.ForChildClass(cls))
        {
            // A restored parent keeps its saved generations: linking it is not a modification.
            Link(relation, values[relation.PointerField.Ordinal] as string, reference, touchParent: false);
        }
        HasChanges = true;
    }

    public void RestoreTombstone(Tombstone tombstone)
    {
        _tombstones = _tombstones.Enqueue(tombstone);
        if (++_tombstoneCount > _tombstoneLimit)
        {
            _tombstones = _tombstones.Dequeue();
            _tombstoneCount--;
        }
        HasChanges = true;
    }

    private void Link(RelationIndex relation, string? parent, string child, bool touchParent = true)
    {
        if (parent is null || parent == XType.NullRef)
        {
            return;
        }
        var index = Relation(relation);
        index[parent] = index.TryGetValue(parent, out var children) ? children.Add(child) : [child];
        if (touchParent)
        {
            TouchParent(relation, parent);
        }
    }

    private void Unlink(RelationIndex relation, string? parent, string child)
    {
        if (parent is null || parent == XType.NullRef)
        {
            return;
        }
        var index = Relation(relation);
        if (index.TryGetValue(parent, out var children))
        {
            var remaining = children.Remove(child);
            if (remaining.IsEmpty)
            {
                index.Remove(parent);
            }
            else
            {
                index[parent] = remaining;
            }
        }
        TouchParent(relation, parent);
    }

    // The parent's computed field changed, so it is modified too (clients see a "mod" event).
    private void TouchParent(RelationIndex relation, string parent)
    {
        var parentClass = relation.ManyField.Owner;
        if (ReadTable(parentClass).TryGetValue(parent, out var row) && row.Modified != Generation)
        {
            Store(parentClass, row, row.Touch(Generation));
        }
    }

    internal DbSnapshot Build()
    {
        var tables = new ImmutableDictionary<string, Row>[_tables.Length];
        for (var i = 0; i < tables.Length; i++)
        {
            tables[i] = _tables[i]?.ToImmutable() ?? _base.Tables[i];
        }
        var uuids = new ImmutableDictionary<string, string>[_uuids.Length];
        for (var i = 0; i < uuids.Length; i++)
        {
            uuids[i] = _uuids[i]?.ToImmutable() ?? _base.Uuids[i];
        }
        var relations = new ImmutableDictionary<string, ImmutableList<string>>[_relations.Length];
        for (var i = 0; i < relations.Length; i++)
        {
            relations[i] = _relations[i]?.ToImmutable() ?? _base.Relations[i];
        }
        var tableGenerations = (long[])_base.TableGenerations.Clone();
        for (var i = 0; i < tables.Length; i++)
        {
            if (_tables[i] is not null)
            {
                tableGenerations[i] = Generation;
            }
        }
        var changes = new ImmutableSortedSet<Change>[_changes.Length];
        for (var i = 0; i < changes.Length; i++)
        {
            changes[i] = _changes[i]?.ToImmutable() ?? _base.Changes[i];
        }
        return new DbSnapshot(Generation, tables, uuids, relations, _tombstones, _tombstoneCount, tableGenerations, changes);
    }
}
