using System.Globalization;
using Xapi.Model;

namespace Xapi.Database.Persistence;

/// <summary>
/// Checks a decoded database dump against the datamodel before it may replace the pool's:
/// every value has its field's type, every reference names a row of its class in the dump (or
/// is <c>OpaqueRef:NULL</c>), no ref appears twice, no uuid twice in a class, and there is
/// exactly one pool. A checksum proves a dump arrived as it was written, not that what wrote
/// it wrote a database this daemon can serve: a string in an int field would surface later as
/// <c>INTERNAL_ERROR</c> on every read of the row.
/// </summary>
public static class DumpValidator
{
    private const string RefPrefix = "OpaqueRef:";

    /// <summary>
    /// Validates <paramref name="dump"/>'s persistent rows and brings their values to canonical
    /// runtime form in place (ints as <see cref="long"/>, enum names in datamodel case).
    /// </summary>
    /// <exception cref="DatabaseFormatException">The first problem found, in one line.</exception>
    public static void Validate(DatabaseDump dump)
    {
        var rows = dump.Rows.Where(r => !XapiDatabase.IsTransient(r.Class)).ToList();
        var classOfRef = new Dictionary<string, ClassMeta>(rows.Count, StringComparer.Ordinal);
        foreach (var row in rows)
        {
            if (!row.Ref.StartsWith(RefPrefix, StringComparison.Ordinal) || row.Ref == XType.NullRef)
            {
                throw Invalid($"a {row.Class.Name} row has the reference '{Shorten(row.Ref)}', not an OpaqueRef");
            }
            if (!classOfRef.TryAdd(row.Ref, row.Class))
            {
                throw Invalid($"the reference {row.Ref} appears twice (a {classOfRef[row.Ref].Name} and a {row.Class.Name})");
            }
        }

        var checker = new Checker(classOfRef);
        var uuids = new Dictionary<ClassMeta, HashSet<string>>();
        foreach (var row in rows)
        {
            var fields = row.Class.Fields;
            for (var i = 0; i < fields.Count; i++)
            {
                row.Values[i] = checker.Check(fields[i].Type, row.Values[i], row, fields[i]);
            }
            if (row.Class.UuidField is { } uuidField && row.Values[uuidField.Ordinal] is string { Length: > 0 } uuid)
            {
                var seen = uuids.TryGetValue(row.Class, out var set) ? set : uuids[row.Class] = new HashSet<string>(StringComparer.Ordinal);
                if (!seen.Add(uuid))
                {
                    throw Invalid($"the {row.Class.Name} uuid {Shorten(uuid)} appears twice (the second on {row.Ref})");
                }
            }
        }

        var pools = rows.Count(r => r.Class == PoolRef.Class);
        if (pools != 1)
        {
            throw Invalid($"it holds {pools} pool objects, and a pool database has exactly one");
        }
    }

    /// <summary>
    /// Why <paramref name="dump"/> cannot be this host's database, or null when it can: it must
    /// hold <paramref name="thisHost"/> (this daemon's own host object) as its pool's master.
    /// Call after <see cref="Validate"/>.
    /// </summary>
    public static string? IdentityProblem(DatabaseDump dump, HostRef thisHost)
    {
        if (!dump.Rows.Any(r => r.Class == HostRef.Class && r.Ref == thisHost.Value))
        {
            return $"the dump does not contain this host ({thisHost.Value}): it is another host's database";
        }
        var pool = dump.Rows.First(r => r.Class == PoolRef.Class);
        var master = (string?)pool.Values[PoolFields.Master];
        return master == thisHost.Value ? null : $"the dump's pool master is {master}, not this host ({thisHost.Value})";
    }

    /// <summary>
    /// <paramref name="value"/> as a dump of <paramref name="snapshot"/> holds it: a reference to
    /// an object that no longer exists becomes <c>OpaqueRef:NULL</c>, or leaves its set or map.
    /// A destroy leaves such references behind (the VBDs of a destroyed VM still name it), as on
    /// real hosts; they name nothing a client could read, and a dump holding them would be
    /// refused by <see cref="Validate"/>, so a backup taken after a destroy could never be restored.
    /// </summary>
    public static object? WithoutDanglingReferences(DbSnapshot snapshot, FieldMeta field, object? value) =>
        field.References is null ? value : WithoutDanglingReferences(snapshot, field.Type, value);

    private static object? WithoutDanglingReferences(DbSnapshot snapshot, XType type, object? value)
    {
        switch (type.Kind)
        {
            case XTypeKind.Ref:
                return Dangles(snapshot, type, value) ? XType.NullRef : value;
            case XTypeKind.Option:
                return value is null ? null : WithoutDanglingReferences(snapshot, type.Element!, value);
            case XTypeKind.Set when value is IReadOnlyList<object?> items:
                var kept = new List<object?>(items.Count);
                var dropped = false;
                foreach (var item in items)
                {
                    if (Dangles(snapshot, type.Element!, item))
                    {
                        dropped = true;
                        continue;
                    }
                    var cleaned = WithoutDanglingReferences(snapshot, type.Element!, item);
                    dropped |= !ReferenceEquals(cleaned, item);
                    kept.Add(cleaned);
                }
                return dropped ? kept.ToArray() : value;
            case XTypeKind.Map when value is ValueMap map:
                var entries = new Dictionary<object, object?>(map.Count);
                var changed = false;
                foreach (var (key, item) in map)
                {
                    if (Dangles(snapshot, type.Key!, key))
                    {
                        changed = true;
                        continue;
                    }
                    var cleaned = WithoutDanglingReferences(snapshot, type.Element!, item);
                    changed |= !ReferenceEquals(cleaned, item);
                    entries[key] = cleaned;
                }
                return changed ? new ValueMap(entries) : value;
            default:
                return value;
        }
    }

    private static bool Dangles(DbSnapshot snapshot, XType type, object? value) =>
        type.Kind == XTypeKind.Ref && value is string reference && reference != XType.NullRef
        && ApiSchema.ClassesByName.GetValueOrDefault(type.Name!) is { IsStored: true } target && !XapiDatabase.IsTransient(target)
        && !snapshot.Exists(target, reference);

    private static DatabaseFormatException Invalid(string reason) =>
        new($"the database dump is not valid: {reason}; refusing to restore");

    // Reasons are one line with bounded length, whatever the dump holds.
    private static string Shorten(string text)
    {
        var clean = new string(text.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return text.Length > 80 ? clean + "…" : clean;
    }

    private sealed class Checker(Dictionary<string, ClassMeta> classOfRef)
    {
        public object? Check(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field)
        {
            switch (type.Kind)
            {
                case XTypeKind.String:
                    return value as string ?? throw Mismatch(type, value, row, field);
                case XTypeKind.Int:
                    return value switch
                    {
                        long => value,
                        int i => (long)i,
                        _ => throw Mismatch(type, value, row, field),
                    };
                case XTypeKind.Float:
                    return value switch
                    {
                        double => value,
                        long l => (double)l,
                        int i => (double)i,
                        _ => throw Mismatch(type, value, row, field),
                    };
                case XTypeKind.Bool:
                    return value is bool ? value : throw Mismatch(type, value, row, field);
                case XTypeKind.DateTime:
                    return value is DateTime dt ? (dt.Kind == DateTimeKind.Utc ? value : DateTime.SpecifyKind(dt, DateTimeKind.Utc)) : throw Mismatch(type, value, row, field);
                case XTypeKind.Enum:
                    if (value is string name && type.EnumMeta.TryCanonical(name, out var canonical))
                    {
                        return canonical == name ? value : canonical;
                    }
                    throw value is string other
                        ? Invalid($"{Where(row, field)} holds '{Shorten(other)}', which is not a value of enum {type.Name}")
                        : Mismatch(type, value, row, field);
                case XTypeKind.Ref:
                    return CheckRef(type, value, row, field);
                case XTypeKind.Option:
                    return value is null ? null : Check(type.Element!, value, row, field);
                case XTypeKind.Set:
                    return CheckSet(type, value, row, field);
                case XTypeKind.Map:
                    return CheckMap(type, value, row, field);
                case XTypeKind.Record:
                    return CheckRecord(type, value, row, field);
                default:
                    throw Invalid($"{Where(row, field)} has type {type}, which a database cannot hold");
            }
        }

        private object? CheckRef(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field)
        {
            if (value is not string reference)
            {
                throw Mismatch(type, value, row, field);
            }
            if (reference == XType.NullRef)
            {
                return value;
            }
            var target = ApiSchema.ClassesByName.GetValueOrDefault(type.Name!);
            // Sessions and tasks are not part of a dump (they live as long as the daemon), and
            // no stored field points at one; a ref to them cannot be checked here.
            if (target is null || !target.IsStored || XapiDatabase.IsTransient(target))
            {
                return value;
            }
            if (!classOfRef.TryGetValue(reference, out var actual) || actual != target)
            {
                throw Invalid($"{Where(row, field)} names {Shorten(reference)}, which is not a {target.Name} in the dump");
            }
            return value;
        }

        private object? CheckSet(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field)
        {
            if (value is not IReadOnlyList<object?> items)
            {
                throw Mismatch(type, value, row, field);
            }
            object?[]? copy = null;
            for (var i = 0; i < items.Count; i++)
            {
                var item = Check(type.Element!, items[i], row, field);
                if (!ReferenceEquals(item, items[i]))
                {
                    copy ??= items.ToArray();
                    copy[i] = item;
                }
            }
            return copy ?? value;
        }

        private object? CheckMap(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field)
        {
            if (value is not ValueMap map)
            {
                throw Mismatch(type, value, row, field);
            }
            Dictionary<object, object?>? copy = null;
            var index = 0;
            foreach (var (key, item) in map)
            {
                var checkedKey = Check(type.Key!, key, row, field)!;
                var checkedItem = Check(type.Element!, item, row, field);
                if (copy is null && (!ReferenceEquals(checkedKey, key) || !ReferenceEquals(checkedItem, item)))
                {
                    copy = new Dictionary<object, object?>(map.Count);
                    foreach (var (earlierKey, earlierItem) in map.Take(index))
                    {
                        copy.Add(earlierKey, earlierItem);
                    }
                }
                // Canonical keys can collide ("Running" and "running" of one enum).
                if (copy is not null && !copy.TryAdd(checkedKey, checkedItem))
                {
                    throw Invalid($"{Where(row, field)} has the key {Shorten(XType.ToDisplayString(checkedKey))} twice");
                }
                index++;
            }
            if (copy is null)
            {
                return value;
            }
            return new ValueMap(copy);
        }

        private object? CheckRecord(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field)
        {
            if (value is not ValueMap record || ApiSchema.ClassesByName.GetValueOrDefault(type.Name!) is not { } cls)
            {
                throw Mismatch(type, value, row, field);
            }
            var copy = new Dictionary<object, object?>(record.Count);
            foreach (var (key, item) in record)
            {
                if (key is not string name || !cls.FieldsByName.TryGetValue(name, out var inner))
                {
                    throw Invalid($"{Where(row, field)} holds a {cls.Name} record with the unknown field {Shorten(XType.ToDisplayString(key))}");
                }
                copy[name] = Check(inner.Type, item, row, field);
            }
            return new ValueMap(copy);
        }

        private static string Where(DatabaseDump.DumpRow row, FieldMeta field) => $"{row.Class.Name} {row.Ref} field {field.Name}";

        private static DatabaseFormatException Mismatch(XType type, object? value, DatabaseDump.DumpRow row, FieldMeta field) =>
            Invalid($"{Where(row, field)} holds {Describe(value)} where the datamodel has {type}");

        private static string Describe(object? value) => value switch
        {
            null => "nothing (null)",
            string => "a string",
            long or int => "an int",
            double => "a float",
            bool => "a bool",
            DateTime => "a datetime",
            ValueMap => "a map",
            IReadOnlyList<object?> => "a set",
            _ => "a " + value.GetType().Name,
        };
    }
}
