using System.Globalization;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// Real xe's generated per-class commands (cli_operations.ml <c>make_param_funs</c>):
/// <c>&lt;class&gt;-list</c>, <c>-param-list</c>, <c>-param-get</c>, <c>-param-set</c>,
/// <c>-param-add</c>, <c>-param-remove</c>, <c>-param-clear</c>, for the classes of <see cref="CliClasses"/>.
/// </summary>
internal static class ParamCommands
{
    private const string ParamName = "param-name";
    private const string ParamKey = "param-key";
    private const string Database = "database:";

    // The three generated lists real xe's plain `xe help` shows.
    private static readonly HashSet<string> StandardLists = new(StringComparer.Ordinal) { "vm", "network", "sr" };

    public static IEnumerable<CliCommand> All() => CliClasses.All.SelectMany(Commands);

    private static IEnumerable<CliCommand> Commands(CliClass cls)
    {
        var p = cls.Prefix;
        var listOptional = new List<string> { CliParams.Params, Database };
        listOptional.AddRange(cls.Fields.Select(f => f.Name));
        listOptional.AddRange(cls.Fields.Where(f => f.Kind == CliFieldKind.Set).Select(f => f.Name + ":contains"));
        yield return new CliCommand($"{p}-list",
            $"Lists all the {cls.Plural}, filtering on the optional arguments. To filter on map parameters, use the syntax 'map-param:key=value'",
            [], listOptional, run => ListAsync(run, cls))
        { Standard = StandardLists.Contains(p) };
        yield return new CliCommand($"{p}-param-list", "Lists all the parameters of the object specified by the uuid.",
            [CliParams.Uuid], [Database], run => ParamListAsync(run, cls));
        yield return new CliCommand($"{p}-param-get",
            "Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key.",
            [CliParams.Uuid, ParamName], [ParamKey, Database], run => ParamGetAsync(run, cls));

        var settable = cls.Fields.Where(f => f.Kind == CliFieldKind.Plain && f.SetMessage is not null && f.Writable).Select(f => f.Name)
            .Concat(cls.Fields.Where(f => f.Kind == CliFieldKind.Map && (f.Writable || f.SetMessage is not null)).Select(f => f.Name + ":"))
            .ToList();
        if (settable.Count > 0)
        {
            yield return new CliCommand($"{p}-param-set",
                "Sets the parameter specified. If param-value is not given, the parameter is set to a null value. To set a (key,value) pair in a map parameter, use the syntax 'map-param:key=value'.",
                [CliParams.Uuid], settable, run => ParamSetAsync(run, cls));
        }
        if (cls.Fields.Any(f => f.Kind != CliFieldKind.Plain && f.Writable))
        {
            yield return new CliCommand($"{p}-param-add",
                "Adds to a set or map parameter. If the parameter is a set, use param-key=<key to add>. If the parameter is a map, pass the values to add as 'key=value' pairs.",
                [CliParams.Uuid, ParamName], [ParamKey], run => ParamAddAsync(run, cls));
            yield return new CliCommand($"{p}-param-remove", "Removes a member or a key,value pair from a set/map respectively.",
                [CliParams.Uuid, ParamName, ParamKey], [], run => ParamRemoveAsync(run, cls));
        }
        var clearable = cls.Fields.Where(f => f.Kind != CliFieldKind.Plain || (f.Writable && f.SetMessage is not null)).Select(f => f.Name).ToList();
        if (clearable.Count > 0)
        {
            yield return new CliCommand($"{p}-param-clear",
                $"Clears the specified parameter (param-name can be {string.Join(",", clearable)}).",
                [CliParams.Uuid, ParamName], [], run => ParamClearAsync(run, cls));
        }
    }

    // Not filters: what -list reads itself, and the standard parameters.
    private static bool IsFilter(string name) =>
        name != CliParams.Params && !name.StartsWith(Database, StringComparison.Ordinal) && !CliParams.Standard.Contains(name);

    private static async ValueTask ListAsync(CliRun run, CliClass cls)
    {
        var records = await CliRecords.AllAsync(run, cls.Class).ConfigureAwait(false);
        if (!run.Args.HasFlag(CliParams.All))
        {
            records = await CliRecords.FilterAsync(run, cls, records, cls.DefaultFilter).ConfigureAwait(false);
            records = await CliRecords.FilterAsync(run, cls, records, run.Args.All.Where(a => IsFilter(a.Key))).ConfigureAwait(false);
        }
        await CliRecords.PrintTableAsync(run, cls, records, Columns(cls, run.Args.Get(CliParams.Params)), expensive: false).ConfigureAwait(false);
    }

    /// <summary>The columns <c>params=</c> selects: absent, the class's defaults; <c>all</c>, every field; else the named ones, in record order.</summary>
    public static IReadOnlyList<CliField> Columns(CliClass cls, string? names)
    {
        if (names is null)
        {
            return cls.DefaultColumns;
        }
        if (names == "all")
        {
            return cls.Fields;
        }
        var wanted = names.Split(',');
        return cls.Fields.Where(f => wanted.Contains(f.Name)).ToList();
    }

    private static async ValueTask<CliRecord> ByUuidAsync(CliRun run, CliClass cls)
    {
        var uuid = run.Required(CliParams.Uuid);
        var reference = (string)(await run.CallAsync($"{cls.Class.Name}.get_by_uuid", uuid).ConfigureAwait(false))!;
        var record = (IReadOnlyDictionary<object, object?>)(await run.CallAsync($"{cls.Class.Name}.get_record", reference).ConfigureAwait(false))!;
        return new CliRecord(reference, cls.Class, record);
    }

    private static async ValueTask ParamListAsync(CliRun run, CliClass cls)
    {
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        await CliRecords.PrintTableAsync(run, cls, [record], cls.Fields, expensive: true).ConfigureAwait(false);
    }

    private static CliField FieldNamed(CliClass cls, string name) => cls.Find(name) ?? throw CliErrors.MissingParameter(name);

    private static async ValueTask ParamGetAsync(CliRun run, CliClass cls)
    {
        var field = FieldNamed(cls, run.Required(ParamName));
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        var key = run.Optional(ParamKey);
        if (key is not null && field.Kind == CliFieldKind.Map)
        {
            var entries = await EntriesAsync(run, record, field).ConfigureAwait(false);
            var found = entries.FirstOrDefault(e => e.Key == key);
            if (found.Key is null)
            {
                throw CliErrors.Failure($"Key {key} not found in map");
            }
            await run.PrintAsync(found.Value).ConfigureAwait(false);
            return;
        }
        var rows = await CliRecords.RenderAsync(run, cls, [record], [field], expensive: true).ConfigureAwait(false);
        await run.PrintAsync(rows[0][0].Value).ConfigureAwait(false);
    }

    private static async ValueTask<IReadOnlyList<(string Key, string Value)>> EntriesAsync(CliRun run, CliRecord record, CliField field)
    {
        var refs = new CliRefResolver(run.Api);
        await refs.PrefetchAsync([record], [field]).ConfigureAwait(false);
        return refs.Entries(record, field).ToList();
    }

    private static async ValueTask<IReadOnlyList<string>> MembersAsync(CliRun run, CliRecord record, CliField field)
    {
        var refs = new CliRefResolver(run.Api);
        await refs.PrefetchAsync([record], [field]).ConfigureAwait(false);
        return refs.Members(record, field).ToList();
    }

    private static async ValueTask ParamSetAsync(CliRun run, CliClass cls)
    {
        var assignments = run.Args.All.Where(a => a.Key != CliParams.Uuid && !CliParams.Standard.Contains(a.Key)).ToList();
        if (assignments.Count == 0)
        {
            return;
        }
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        // Maps changed only as a whole (no add_to_): keys gathered, one set at the end, as real xe does.
        var wholeMaps = new Dictionary<CliField, Dictionary<string, string>>();
        foreach (var (name, value) in assignments)
        {
            var colon = name.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0 && cls.Find(name) is { } field)
            {
                if (field.Kind == CliFieldKind.Plain && field.Writable && field.SetMessage is { } setter)
                {
                    var converted = await ConvertAsync(run, field, field.Field.Type, value).ConfigureAwait(false);
                    await run.CallAsync(setter, record.Ref, converted).ConfigureAwait(false);
                }
                else if (field.Kind == CliFieldKind.Map && field.Writable)
                {
                    throw CliErrors.Failure($"Field '{name}' is a map or set. use the 'name:key=value' syntax.");
                }
                else
                {
                    throw CliErrors.Failure($"Field '{name}' is read-only.");
                }
                continue;
            }
            string prefix, key;
            CliField? target;
            if (colon >= 0)
            {
                prefix = name[..colon];
                key = name[(colon + 1)..];
                target = cls.Find(prefix);
            }
            else
            {
                // The legacy spelling <map>-<key>=value.
                target = cls.Fields.Where(f => f.Kind == CliFieldKind.Map && name.StartsWith(f.Name + "-", StringComparison.Ordinal))
                    .OrderByDescending(f => f.Name.Length).FirstOrDefault();
                prefix = target?.Name ?? name;
                key = target is null ? "" : name[(target.Name.Length + 1)..];
            }
            switch (target)
            {
                case null:
                    throw CliErrors.Failure($"Unknown field '{name}'");
                case { Kind: CliFieldKind.Set }:
                    throw CliErrors.Failure("Cannot param-set on set fields");
                case { Kind: CliFieldKind.Plain }:
                    throw CliErrors.Failure($"Field '{prefix}' is not a set or map");
                case { Writable: true, AddMessage: { } add, RemoveMessage: { } remove }:
                    await run.CallAsync(remove, record.Ref, key).ConfigureAwait(false);
                    await run.CallAsync(add, record.Ref, key, value).ConfigureAwait(false);
                    break;
                case { SetMessage: not null }:
                    if (!wholeMaps.TryGetValue(target, out var pending))
                    {
                        pending = wholeMaps[target] = (await EntriesAsync(run, record, target).ConfigureAwait(false)).ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
                    }
                    pending[key] = value;
                    break;
                default:
                    throw CliErrors.Failure($"Map field '{prefix}' is read-only.");
            }
        }
        foreach (var (field, map) in wholeMaps)
        {
            // Maps travel as the wire decodes them: string keys.
            var value = map.ToDictionary(p => p.Key, p => (object?)p.Value, StringComparer.Ordinal);
            await run.CallAsync(field.SetMessage!, record.Ref, value).ConfigureAwait(false);
        }
    }

    /// <summary>A command-line string as the value a setter takes, parsed as real xe parses it.</summary>
    private static async ValueTask<object?> ConvertAsync(CliRun run, CliField field, XType type, string value)
    {
        switch (type.Kind)
        {
            case XTypeKind.Int:
                if (field.Name.StartsWith("memory-", StringComparison.Ordinal))
                {
                    return ParseBytes(value) ?? throw CliErrors.Failure(
                        $"Failed to parse field '{field.Name}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{value}'");
                }
                return long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) ? l
                    : throw CliErrors.Failure($"Failed to parse parameter '{field.Name}': expecting an integer");
            case XTypeKind.Float:
                return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d
                    : throw CliErrors.Failure($"Parameter {field.Name} must be a floating-point number");
            case XTypeKind.Bool:
                return value.ToLowerInvariant() switch
                {
                    "true" or "t" or "yes" or "y" or "1" => true,
                    "false" or "f" or "no" or "n" or "0" => false,
                    _ => throw CliErrors.Failure($"Failed to parse parameter '{field.Name}': expecting a boolean (true or false)"),
                };
            case XTypeKind.DateTime:
                return DateTimeFormat.TryParse(value, out var dt) ? dt : throw CliErrors.Failure($"Failed to parse parameter '{field.Name}': expecting a date");
            case XTypeKind.Ref:
                return value.Length == 0 ? XType.NullRef : await run.CallAsync($"{type.Name}.get_by_uuid", value).ConfigureAwait(false);
            default:
                return value;
        }
    }

    // Real xe's byte sizes: a number with an optional KiB/MiB/GiB/TiB suffix.
    private static long? ParseBytes(string value)
    {
        (string Suffix, long Factor)[] units = [("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40)];
        foreach (var (suffix, factor) in units)
        {
            if (value.EndsWith(suffix, StringComparison.Ordinal)
                && long.TryParse(value[..^suffix.Length], NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            {
                return n * factor;
            }
        }
        return long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var plain) ? plain : null;
    }

    private static async ValueTask ParamAddAsync(CliRun run, CliClass cls)
    {
        var field = FieldNamed(cls, run.Required(ParamName));
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        switch (field)
        {
            case { Kind: CliFieldKind.Set, Writable: true, AddMessage: { } addMember }:
                var key = run.Optional(ParamKey)
                    ?? throw CliErrors.Failure("When adding a key to a set, use the syntax: *-param-add param-name=<name> param-key=<key>");
                var member = await ConvertAsync(run, field, field.Field.Type.Element!, key).ConfigureAwait(false);
                await run.CallAsync(addMember, record.Ref, member).ConfigureAwait(false);
                break;
            case { Kind: CliFieldKind.Map, Writable: true, AddMessage: { } addEntry }:
                foreach (var (k, v) in run.Args.All.Where(a => a.Key is not (CliParams.Uuid or ParamName or ParamKey) && !CliParams.Standard.Contains(a.Key)))
                {
                    await run.CallAsync(addEntry, record.Ref, k, v).ConfigureAwait(false);
                }
                break;
            case { Kind: CliFieldKind.Set or CliFieldKind.Map }:
                throw CliErrors.Failure("Parameter is read-only");
            default:
                throw CliErrors.Failure("Can only add to parameters of type Set or Map");
        }
    }

    private static async ValueTask ParamRemoveAsync(CliRun run, CliClass cls)
    {
        var field = FieldNamed(cls, run.Required(ParamName));
        var key = run.Required(ParamKey);
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        switch (field)
        {
            case { Kind: CliFieldKind.Set, Writable: true, RemoveMessage: { } removeMember }:
                var members = await MembersAsync(run, record, field).ConfigureAwait(false);
                if (!members.Contains(key))
                {
                    throw CliErrors.Failure($"Key {key} is not in the set");
                }
                await run.CallAsync(removeMember, record.Ref, await ConvertAsync(run, field, field.Field.Type.Element!, key).ConfigureAwait(false)).ConfigureAwait(false);
                break;
            case { Kind: CliFieldKind.Map, Writable: true, RemoveMessage: { } removeEntry }:
                var entries = await EntriesAsync(run, record, field).ConfigureAwait(false);
                if (!entries.Any(e => e.Key == key))
                {
                    throw CliErrors.Failure($"Key {key} is not in map");
                }
                await run.CallAsync(removeEntry, record.Ref, key).ConfigureAwait(false);
                break;
            case { Kind: CliFieldKind.Set or CliFieldKind.Map }:
                throw CliErrors.Failure("Cannot remove parameters from read-only map");
            default:
                throw CliErrors.Failure("Can only remove from parameters of type Set or Map");
        }
    }

    private static async ValueTask ParamClearAsync(CliRun run, CliClass cls)
    {
        var field = FieldNamed(cls, run.Required(ParamName));
        var record = await ByUuidAsync(run, cls).ConfigureAwait(false);
        switch (field)
        {
            case { Kind: CliFieldKind.Set, Writable: true, RemoveMessage: { } removeMember }:
                foreach (var member in record.Values.GetValueOrDefault(field.Field.Name) as IEnumerable<object?> ?? [])
                {
                    await run.CallAsync(removeMember, record.Ref, member).ConfigureAwait(false);
                }
                break;
            case { Kind: CliFieldKind.Map, SetMessage: { } setMap }:
                await run.CallAsync(setMap, record.Ref, new Dictionary<string, object?>()).ConfigureAwait(false);
                break;
            case { Kind: CliFieldKind.Map, Writable: true, RemoveMessage: { } removeEntry }:
                foreach (var key in (record.Values.GetValueOrDefault(field.Field.Name) as IReadOnlyDictionary<object, object?>)?.Keys ?? [])
                {
                    await run.CallAsync(removeEntry, record.Ref, key).ConfigureAwait(false);
                }
                break;
            case { Kind: CliFieldKind.Plain, Writable: true, SetMessage: { } setter }:
                object? empty;
                try
                {
                    empty = await ConvertAsync(run, field, field.Field.Type, "").ConfigureAwait(false);
                    await run.CallAsync(setter, record.Ref, empty).ConfigureAwait(false);
                }
                catch (Exception e) when (e is CliFailure or XenApiException)
                {
                    throw CliErrors.Failure("Cannot clear this parameter");
                }
                break;
            default:
                throw CliErrors.Failure("Can only clear RW parameters");
        }
    }
}
