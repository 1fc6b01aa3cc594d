using System.Globalization;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>An object as the CLI prints it: its reference, class and field values.</summary>
public sealed record CliRecord(string Ref, ClassMeta Class, IReadOnlyDictionary<object, object?> Values)
{
    public string Uuid => Values.TryGetValue("uuid", out var uuid) ? uuid as string ?? "" : "";
}

/// <summary>Reading, filtering and printing records the way real <c>xe</c> does.</summary>
public static class CliRecords
{
    /// <summary>What real xe prints for a reference it cannot find.</summary>
    public const string NotInDatabase = "<not in database>";

    /// <summary>The CLI's name for a field: its name in the CLI class when it has one (<c>suspend-VDI-uuid</c>), else dashes for underscores.</summary>
    public static string CliName(FieldMeta field) =>
        CliClasses.For(field.Owner)?.Fields.FirstOrDefault(f => f.Field == field && f.Via is null)?.Name ?? field.Name.Replace('_', '-');

    public static async ValueTask<IReadOnlyList<CliRecord>> AllAsync(CliRun run, ClassMeta cls)
    {
        var all = (IReadOnlyDictionary<object, object?>?)await run.CallAsync($"{cls.Name}.get_all_records").ConfigureAwait(false);
        var records = new List<CliRecord>();
        foreach (var (reference, record) in all ?? new Dictionary<object, object?>())
        {
            records.Add(new CliRecord((string)reference, cls, (IReadOnlyDictionary<object, object?>)record!));
        }
        return records;
    }

    /// <summary>
    /// Whether a record matches every <c>cli-name=value</c> filter on its own values (references
    /// compare as stored; <see cref="FilterAsync"/> compares them as printed, by uuid, and knows
    /// map and set filters).
    /// </summary>
    public static bool Matches(CliRecord record, IEnumerable<KeyValuePair<string, string>> filters)
    {
        var cls = CliClasses.For(record.Class);
        foreach (var (name, expected) in filters)
        {
            var field = cls?.Find(name)?.Field ?? record.Class.Fields.FirstOrDefault(f => f.Name.Replace('_', '-') == name);
            if (field is null || !record.Values.TryGetValue(field.Name, out var value) || Render(value) != expected)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>A value in real xe's words without knowing its field: maps <c>k: v; k2: v2</c>, sets <c>a; b</c>.</summary>
    public static string Render(object? value) => value switch
    {
        null => "",
        string s => s,
        bool b => b ? "true" : "false",
        double d => d.ToString("F3", CultureInfo.InvariantCulture),
        IReadOnlyDictionary<object, object?> map => string.Join("; ", map.Select(p => $"{Render(p.Key)}: {Render(p.Value)}")),
        IEnumerable<object?> set => string.Join("; ", set.Select(Render)),
        _ => XType.ToDisplayString(value),
    };

    /// <summary>
    /// Prints records as real xe's tables: every record as aligned <c>name (qualifier): value</c>
    /// lines and two empty lines; <paramref name="fields"/> (CLI names) selects columns, kept in
    /// record order. With <c>--minimal</c>, the first printed field of each record, comma-separated.
    /// </summary>
    public static async ValueTask PrintAsync(CliRun run, IReadOnlyList<CliRecord> records, IReadOnlyList<string>? fields = null)
    {
        if (records.Count == 0)
        {
            return;
        }
        var cls = CliClasses.For(records[0].Class) ?? CliClasses.Generic(records[0].Class);
        var selected = fields is null ? cls.Fields : cls.Fields.Where(f => fields.Contains(f.Name)).ToList();
        await PrintTableAsync(run, cls, records, selected, expensive: false).ConfigureAwait(false);
    }

    /// <summary>Prints the given columns of records in the CLI class's words (see <see cref="PrintAsync"/>).</summary>
    public static async ValueTask PrintTableAsync(CliRun run, CliClass cls, IReadOnlyList<CliRecord> records, IReadOnlyList<CliField> fields, bool expensive)
    {
        var rows = await RenderAsync(run, cls, records, fields, expensive).ConfigureAwait(false);
        await PrintRowsAsync(run, rows).ConfigureAwait(false);
    }

    /// <summary>Prints rendered rows (key with qualifier, value) as real xe's printer does.</summary>
    public static async ValueTask PrintRowsAsync(CliRun run, IReadOnlyList<IReadOnlyList<(string Key, string Value)>> rows)
    {
        if (run.Console is CliMinimalConsole minimal)
        {
            if (rows.Count > 0 && rows.All(r => r.Count > 0))
            {
                minimal.AddChunk(string.Join(",", rows.Select(r => CliMinimalConsole.Escape(r[0].Value))));
            }
            return;
        }
        foreach (var row in rows)
        {
            await run.PrintAsync(Layout(row) + "\n").ConfigureAwait(false);
        }
    }

    /// <summary>
    /// One record as real xe lays it out: keys padded to 4 + the longest key, the first
    /// left-justified and the others right-justified, each line <c>key: value</c>, ending in a newline.
    /// </summary>
    public static string Layout(IReadOnlyList<(string Key, string Value)> row)
    {
        var width = 4 + (row.Count == 0 ? 0 : row.Max(r => r.Key.Length));
        var lines = row.Select((r, i) => (i == 0 ? r.Key.PadRight(width) : r.Key.PadLeft(width)) + ": " + r.Value);
        return string.Join("\n", lines) + "\n";
    }

    /// <summary>Renders the chosen fields of records (references resolved in one batch per class).</summary>
    public static async ValueTask<IReadOnlyList<IReadOnlyList<(string Key, string Value)>>> RenderAsync(CliRun run, CliClass cls,
        IReadOnlyList<CliRecord> records, IReadOnlyList<CliField> fields, bool expensive)
    {
        var refs = new CliRefResolver(run.Api);
        await refs.PrefetchAsync(records, fields).ConfigureAwait(false);
        var rows = new List<IReadOnlyList<(string, string)>>(records.Count);
        foreach (var record in records)
        {
            var row = new List<(string, string)>(fields.Count);
            foreach (var field in fields)
            {
                row.Add((field.Key, !expensive && field.Expensive ? "<expensive field>" : refs.Value(record, field)));
            }
            rows.Add(row);
        }
        return rows;
    }

    /// <summary>
    /// Keeps the records matching real xe's filters, in order: <c>field=value</c> on the printed
    /// value, <c>map:key=value</c>, <c>set:contains=value</c>. Unknown names fail as real xe
    /// does (<c>Error: Unknown field 'x'</c>) unless there is nothing to filter.
    /// </summary>
    public static async ValueTask<IReadOnlyList<CliRecord>> FilterAsync(CliRun run, CliClass cls, IReadOnlyList<CliRecord> records,
        IEnumerable<KeyValuePair<string, string>> filters)
    {
        var list = filters.ToList();
        if (list.Count == 0 || records.Count == 0)
        {
            return records;
        }
        var tests = new List<(CliField Field, string? Key, bool Contains, string Value)>();
        foreach (var (name, value) in list)
        {
            var colon = name.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                string? key = null;
                var field = cls.Find(name) ?? MapOrSetByDash(cls, name, out key);
                if (field is null)
                {
                    throw CliErrors.Failure($"Unknown field '{name}'");
                }
                tests.Add(field.Name == name ? (field, null, false, value) : (field, key, field.Kind == CliFieldKind.Set, value));
                continue;
            }
            var prefix = name[..colon];
            var rest = name[(colon + 1)..];
            var target = cls.Find(prefix) ?? throw CliErrors.Failure($"Unknown field '{name}'");
            switch (target.Kind)
            {
                case CliFieldKind.Map:
                    tests.Add((target, rest, false, value));
                    break;
                case CliFieldKind.Set when rest == "contains":
                    tests.Add((target, null, true, value));
                    break;
                case CliFieldKind.Set:
                    throw CliErrors.Failure("Invalid syntax for set filtering (should be set-param:contains=key)");
                default:
                    throw CliErrors.Failure($"Field '{prefix}' is not a set or map");
            }
        }
        var refs = new CliRefResolver(run.Api);
        await refs.PrefetchAsync(records, tests.Select(t => t.Field).Distinct().ToList()).ConfigureAwait(false);
        return records.Where(record => tests.All(t => Test(refs, record, t))).ToList();
    }

    private static bool Test(CliRefResolver refs, CliRecord record, (CliField Field, string? Key, bool Contains, string Value) test)
    {
        var (field, key, contains, expected) = test;
        var insensitive = field.CaseInsensitive;
        if (contains)
        {
            return refs.Members(record, field).Any(m => Same(m, expected, insensitive));
        }
        if (key is not null)
        {
            foreach (var (k, v) in refs.Entries(record, field))
            {
                if (Same(k, key, insensitive))
                {
                    return Same(v, expected, insensitive);
                }
            }
            return false;
        }
        return Same(refs.Value(record, field), expected, insensitive);
    }

    private static bool Same(string a, string b, bool insensitive) =>
        string.Equals(a, b, insensitive ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

    // Real xe's legacy filter spelling: <map>-<key>=value for a map field, longest name first.
    private static CliField? MapOrSetByDash(CliClass cls, string name, out string? key)
    {
        key = null;
        foreach (var field in cls.Fields.Where(f => f.Kind is CliFieldKind.Map or CliFieldKind.Set).OrderByDescending(f => f.Name.Length))
        {
            if (name.StartsWith(field.Name + "-", StringComparison.Ordinal))
            {
                key = name[(field.Name.Length + 1)..];
                return field;
            }
        }
        return null;
    }

    /// <summary>
    /// An error parameter as real xe shows it: a reference becomes <c>uuid (name-label)</c> (or
    /// just <c>uuid</c> for classes without names); anything else is shown as given.
    /// </summary>
    public static async ValueTask<string> RefConvertAsync(ICliApi api, string value)
    {
        if (!value.StartsWith("OpaqueRef:", StringComparison.Ordinal) || value == XType.NullRef)
        {
            return value;
        }
        foreach (var cls in RefClassesToTry)
        {
            try
            {
                var record = await api.CallAsync($"{cls.Name}.get_record", value).ConfigureAwait(false) as IReadOnlyDictionary<object, object?>;
                if (record is not null && record.TryGetValue("uuid", out var uuid))
                {
                    return record.TryGetValue("name_label", out var name) ? $"{uuid} ({name})" : $"{uuid}";
                }
            }
            catch (XenApiException)
            {
                // Not of this class: try the next.
            }
        }
        return value;
    }

    // The classes whose references errors usually carry, most likely first.
    private static readonly IReadOnlyList<ClassMeta> RefClassesToTry =
        new[] { "VM", "host", "SR", "VDI", "network", "VBD", "VIF", "PIF", "PBD", "pool", "task", "VM_appliance", "Bond", "VLAN", "console" }
            .Select(n => ApiSchema.ClassesByName.GetValueOrDefault(n)).OfType<ClassMeta>().ToList();
}

/// <summary>Real xe's <c>Cli_failure</c>: printed as <c>Error: message</c>.</summary>
public static class CliErrors
{
    public static CliFailure Failure(string message) => new($"Error: {message}");

    /// <summary>A field name a record does not have (param-get, param-add on an unknown name).</summary>
    public static CliErrorFailure MissingParameter(string name) => new("Missing parameter", name);
}

/// <summary>
/// Resolves the references a printout shows, in one batch per referenced class: a single
/// <c>get_record</c> each for a few, one <c>get_all_records</c> for many (a thousand VMs must
/// print quickly).
/// </summary>
internal sealed class CliRefResolver(ICliApi api)
{
    private const int FewRefs = 8;

    private readonly Dictionary<string, Dictionary<string, IReadOnlyDictionary<object, object?>>> _records = new(StringComparer.Ordinal);

    public async ValueTask PrefetchAsync(IReadOnlyList<CliRecord> records, IReadOnlyList<CliField> fields)
    {
        // First the references the records hold, then those the resolved objects hold (a VBD's VM's name is one hop).
        var wanted = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var field in fields)
        {
            if (field.Field is not { } owner)
            {
                continue;
            }
            var target = owner.Type.Kind switch
            {
                XTypeKind.Ref => owner.Type.Name,
                XTypeKind.Set or XTypeKind.Option when owner.Type.Element!.Kind == XTypeKind.Ref => owner.Type.Element.Name,
                _ => null,
            };
            if (target is null)
            {
                continue;
            }
            var set = wanted.TryGetValue(target, out var s) ? s : wanted[target] = new HashSet<string>(StringComparer.Ordinal);
            foreach (var record in records)
            {
                foreach (var r in RefsIn(record.Values.GetValueOrDefault(owner.Name)))
                {
                    set.Add(r);
                }
            }
        }
        foreach (var (cls, refs) in wanted)
        {
            await LoadAsync(cls, refs).ConfigureAwait(false);
        }
        // Second hop: a via field whose target field is itself a reference (rare: shown as uuid).
        var second = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var field in fields.Where(f => f.Via is { Type.Kind: XTypeKind.Ref }))
        {
            var target = field.Via!.Type.Name!;
            if (!_records.TryGetValue(target, out var loaded))
            {
                continue;
            }
            if (field.Target is { Type: var t } targetField && (t.Kind == XTypeKind.Ref || (t.Kind == XTypeKind.Set && t.Element!.Kind == XTypeKind.Ref)))
            {
                var cls = t.Kind == XTypeKind.Ref ? t.Name! : t.Element!.Name!;
                var set = second.TryGetValue(cls, out var s) ? s : second[cls] = new HashSet<string>(StringComparer.Ordinal);
                foreach (var rec in loaded.Values)
                {
                    foreach (var r in RefsIn(rec.GetValueOrDefault(targetField.Name)))
                    {
                        set.Add(r);
                    }
                }
            }
        }
        foreach (var (cls, refs) in second)
        {
            await LoadAsync(cls, refs).ConfigureAwait(false);
        }
    }

    private static IEnumerable<string> RefsIn(object? value) => value switch
    {
        string s when s != XType.NullRef && s.Length > 0 => [s],
        IEnumerable<object?> list => list.OfType<string>().Where(s => s != XType.NullRef),
        _ => [],
    };

    private async ValueTask LoadAsync(string cls, HashSet<string> refs)
    {
        if (!_records.TryGetValue(cls, out var known))
        {
            known = _records[cls] = new Dictionary<string, IReadOnlyDictionary<object, object?>>(StringComparer.Ordinal);
        }
        var missing = refs.Where(r => !known.ContainsKey(r)).ToList();
        if (missing.Count == 0)
        {
            return;
        }
        if (missing.Count <= FewRefs)
        {
            foreach (var r in missing)
            {
                try
                {
                    if (await api.CallAsync($"{cls}.get_record", r).ConfigureAwait(false) is IReadOnlyDictionary<object, object?> record)
                    {
                        known[r] = record;
                    }
                }
                catch (XenApiException)
                {
                    // Gone or never there: printed as real xe prints an unknown reference.
                }
            }
            return;
        }
        if (await api.CallAsync($"{cls}.get_all_records").ConfigureAwait(false) is IReadOnlyDictionary<object, object?> all)
        {
            foreach (var (r, record) in all)
            {
                known[(string)r] = (IReadOnlyDictionary<object, object?>)record!;
            }
        }
    }

    private IReadOnlyDictionary<object, object?>? Lookup(string? cls, object? reference) =>
        cls is not null && reference is string r && _records.TryGetValue(cls, out var known) && known.TryGetValue(r, out var record) ? record : null;

    private string Uuid(string? cls, object? reference) =>
        Lookup(cls, reference) is { } record && record.TryGetValue("uuid", out var uuid) ? uuid as string ?? "" : CliRecords.NotInDatabase;

    // The raw value of a field for a record, following a via hop.
    private (object? Value, XType? Type) Raw(CliRecord record, CliField field)
    {
        if (field.Field is null)
        {
            return (null, null);
        }
        var value = record.Values.GetValueOrDefault(field.Field.Name);
        if (field.Via is null)
        {
            return (value, field.Field.Type);
        }
        var target = Lookup(field.Field.Type.Name, value);
        return target is null ? (null, null) : (target.GetValueOrDefault(field.Target!.Name), field.Target.Type);
    }

    public string Value(CliRecord record, CliField field)
    {
        var (value, type) = Raw(record, field);
        if (type is null)
        {
            return field.Via is not null ? CliRecords.NotInDatabase : "";
        }
        return Format(value, type, field);
    }

    public IEnumerable<string> Members(CliRecord record, CliField field)
    {
        var (value, type) = Raw(record, field);
        return value is IEnumerable<object?> list && type is { Element: { } element }
            ? list.Select(m => Format(m, element, field))
            : [];
    }

    public IEnumerable<(string Key, string Value)> Entries(CliRecord record, CliField field)
    {
        var (value, type) = Raw(record, field);
        return value is IReadOnlyDictionary<object, object?> map && type is { Kind: XTypeKind.Map }
            ? map.Select(p => (Format(p.Key, type.Key!, field), Format(p.Value, type.Element!, field)))
            : [];
    }

    private string Format(object? value, XType type, CliField field) => type.Kind switch
    {
        XTypeKind.Ref => value is XType.NullRef && field.NullAsRef ? XType.NullRef : Uuid(type.Name, value),
        XTypeKind.Set => value is IEnumerable<object?> list
            ? string.Join(field.CommaSet ? ", " : "; ", list.Select(m => Format(m, type.Element!, field)))
            : "",
        XTypeKind.Map => value is IReadOnlyDictionary<object, object?> map
            ? string.Join("; ", map.Select(p => $"{Format(p.Key, type.Key!, field)}: {Format(p.Value, type.Element!, field)}"))
            : "",
        XTypeKind.Float => value is double d ? d.ToString("F3", CultureInfo.InvariantCulture) : CliRecords.Render(value),
        XTypeKind.DateTime => value is DateTime dt ? DateTimeFormat.Format(dt) : CliRecords.Render(value),
        XTypeKind.Enum => field.LowerCaseEnum && value is string e ? e.ToLowerInvariant() : CliRecords.Render(value),
        XTypeKind.Option => value is null ? "" : Format(value, type.Element!, field),
        _ => CliRecords.Render(value),
    };
}
