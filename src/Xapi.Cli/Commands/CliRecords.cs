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
    /// <summary>The CLI's name for a field: dashes for underscores.</summary>
    public static string CliName(FieldMeta field) => field.Name.Replace('_', '-');

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

    /// <summary>Whether a record matches every <c>cli-name=value</c> filter.</summary>
    public static bool Matches(CliRecord record, IEnumerable<KeyValuePair<string, string>> filters)
    {
        foreach (var (name, expected) in filters)
        {
            var field = record.Class.Fields.FirstOrDefault(f => CliName(f) == name);
            if (field is null || !record.Values.TryGetValue(field.Name, out var value) || Render(value) != expected)
            {
                return false;
            }
        }
        return true;
    }

    public static string Render(object? value) => value switch
    {
        null => "",
        string s => s,
        bool b => b ? "true" : "false",
        IReadOnlyDictionary<object, object?> map => string.Join("; ", map.Select(p => $"{p.Key}: {Render(p.Value)}")),
        IEnumerable<object?> set => string.Join("; ", set.Select(Render)),
        _ => XType.ToDisplayString(value),
    };

    /// <summary>Prints records, blank-line separated; <c>--minimal</c> prints their uuids comma-separated.</summary>
    public static async ValueTask PrintAsync(CliRun run, IReadOnlyList<CliRecord> records, IReadOnlyList<string>? fields = null)
    {
        if (run.Minimal)
        {
            await run.PrintAsync(string.Join(",", records.Select(r => r.Uuid))).ConfigureAwait(false);
            return;
        }
        foreach (var record in records)
        {
            foreach (var field in record.Class.Fields)
            {
                var name = CliName(field);
                if (fields is null || fields.Contains(name))
                {
                    await run.PrintAsync($"{name} ( RO): {Render(record.Values[field.Name])}").ConfigureAwait(false);
                }
            }
            await run.PrintAsync("").ConfigureAwait(false);
        }
    }
}
