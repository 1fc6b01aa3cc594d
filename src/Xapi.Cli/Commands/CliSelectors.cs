using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// How one kind of selector picks objects (real xe's <c>select_vms</c>, <c>select_hosts</c>,
/// <c>select_srs</c>): the parameter naming an object by uuid or name, the fields that parameter
/// is compared with, the filters always applied, and the words of the errors.
/// </summary>
public sealed record CliSelector(
    ClassMeta Class,
    string Key,
    IReadOnlyList<string> KeyFields,
    IReadOnlyList<KeyValuePair<string, object?>> Excluding,
    string NoneFound,
    string SeveralNeedMultiple,
    string SeveralSingleOnly)
{
    /// <summary>
    /// VMs: <c>vm=</c> is a uuid or a name-label; templates (and with them snapshots, which are
    /// templates too) and control domains are left out unless the command includes them.
    /// </summary>
    public static CliSelector Vm(bool includeControlDomains = false, bool includeTemplates = false) => new(
        ApiSchema.Class("VM"),
        "vm",
        ["uuid", "name_label"],
        [
            .. includeTemplates ? [] : new[] { new KeyValuePair<string, object?>("is_a_template", false) },
            .. includeControlDomains ? [] : new[] { new KeyValuePair<string, object?>("is_control_domain", false) },
        ],
        "No matching VMs found",
        "Multiple matches VMs found. --multiple required to complete the operation",
        "Multiple matches VMs found. Operation can only be performed on one VM at a time");

    /// <summary>Hosts: <c>host=</c> is a uuid, a hostname or a name-label.</summary>
    public static CliSelector Host { get; } = new(
        ApiSchema.Class("host"),
        "host",
        ["uuid", "hostname", "name_label"],
        [],
        "No matching hosts found",
        "Multiple matching hosts found. --multiple required to complete the operation",
        "Multiple matching hosts found. Operation can only be performed on one host at a time");

    /// <summary>SRs: <c>sr=</c> is a uuid or a name-label. Real xe says "hosts" when none match (sic).</summary>
    public static CliSelector Sr { get; } = new(
        ApiSchema.Class("SR"),
        "sr",
        ["uuid", "name_label"],
        [],
        "No matching hosts found",
        "Multiple matching SRs found. --multiple required to complete the operation",
        "Multiple matching SRs found. Operation can only be performed on one SR at a time");
}

/// <summary>
/// Real xe's object selectors (<c>do_vm_op</c> and its siblings): <c>vm=</c> by uuid or name,
/// every other parameter that is neither standard nor the command's own a field filter, one
/// match runs the operation, several need <c>--multiple</c>, and with it every failure is
/// reported on its own line while the others go ahead.
/// </summary>
public static class CliSelectors
{
    /// <summary>The objects the command line selects, in the server's order.</summary>
    /// <param name="ignore">The command's own parameters, which are not filters (compared on the part before <c>:</c>).</param>
    public static async ValueTask<IReadOnlyList<CliRecord>> SelectAsync(CliRun run, CliSelector selector, IReadOnlyCollection<string> ignore)
    {
        IEnumerable<CliRecord> records = await CliRecords.AllAsync(run, selector.Class).ConfigureAwait(false);
        var cls = CliClasses.For(selector.Class) ?? CliClasses.Generic(selector.Class);
        if (run.Args.Get(selector.Key) is { } wanted)
        {
            records = records.Where(r => selector.KeyFields.Any(f => r.Values.TryGetValue(f, out var v) && v is string s && s == wanted));
        }
        var selected = records
            .Where(r => selector.Excluding.All(x => r.Values.TryGetValue(x.Key, out var v) && Equals(v, x.Value)))
            .ToList();
        foreach (var filter in run.Args.Params)
        {
            if (selected.Count == 0)
            {
                break; // As real xe: an unknown field is only an error while there is something to filter.
            }
            var stem = filter.Key.Split(':', 2)[0];
            if (filter.Key == selector.Key || CliParams.Standard.Contains(stem) || ignore.Contains(stem))
            {
                continue;
            }
            selected = [.. await CliRecords.FilterAsync(run, cls, selected, [filter]).ConfigureAwait(false)];
        }
        return selected;
    }

    /// <summary>
    /// Runs <paramref name="op"/> on the selected objects as real xe's <c>do_vm_op</c> does; returns
    /// the results (with <c>--multiple</c> in the reverse order, as real xe collects them).
    /// </summary>
    /// <param name="multiple">Whether the operation may run on several objects at all.</param>
    /// <param name="alwaysMultiple">Runs on several objects without <c>--multiple</c> (listings).</param>
    public static async ValueTask<IReadOnlyList<T>> DoAsync<T>(CliRun run, CliSelector selector, IReadOnlyCollection<string> ignore,
        Func<CliRecord, ValueTask<T>> op, bool multiple = true, bool alwaysMultiple = false)
    {
        var selected = await SelectAsync(run, selector, ignore).ConfigureAwait(false);
        switch (selected.Count)
        {
            case 0:
                throw new CliFailure("Error: " + selector.NoneFound);
            case 1:
                return [await WithMessagesAsync(run, selected[0], op).ConfigureAwait(false)];
        }
        if (!multiple || !(alwaysMultiple || CliValues.BoolParam(run, CliParams.Multiple)))
        {
            throw new CliFailure("Error: " + (multiple ? selector.SeveralNeedMultiple : selector.SeveralSingleOnly));
        }
        var results = new List<T>();
        var failures = new List<string>();
        foreach (var record in selected)
        {
            try
            {
                results.Add(await WithMessagesAsync(run, record, op).ConfigureAwait(false));
            }
            catch (XenApiException e)
            {
                failures.Add($"operation failed on {record.Uuid}: {await DescribeAsync(run, e.Code, e.Parameters).ConfigureAwait(false)}");
            }
            catch (CliErrorFailure e)
            {
                failures.Add($"operation failed on {record.Uuid}: {await DescribeAsync(run, e.Code, e.Parameters).ConfigureAwait(false)}");
            }
            catch (CliFailure e)
            {
                failures.Add($"operation failed on {record.Uuid}: {e.Message}");
            }
        }
        results.Reverse();
        if (failures.Count > 0)
        {
            // Real xe reports the failures last-first, on standard output, and exits 1.
            failures.Reverse();
            foreach (var failure in failures)
            {
                await run.Console.PrintAsync(failure).ConfigureAwait(false);
            }
            throw new CliExitWithStatus(1);
        }
        return results;
    }

    /// <summary>Runs an operation that returns nothing on the selected objects.</summary>
    public static async ValueTask DoAsync(CliRun run, CliSelector selector, IReadOnlyCollection<string> ignore,
        Func<CliRecord, ValueTask> op, bool multiple = true, bool alwaysMultiple = false) =>
        await DoAsync(run, selector, ignore, async r =>
        {
            await op(r).ConfigureAwait(false);
            return true;
        }, multiple, alwaysMultiple).ConfigureAwait(false);

    // Real xe's wrap_op: the object's alerts raised by the operation, if more urgent than
    // message-priority (default 5), go to standard error.
    private static async ValueTask<T> WithMessagesAsync<T>(CliRun run, CliRecord record, Func<CliRecord, ValueTask<T>> op)
    {
        var since = DateTime.UtcNow;
        var result = await op(record).ConfigureAwait(false);
        if (record.Class.Name != "VM")
        {
            return result;
        }
        var threshold = long.TryParse(run.Args.Get("message-priority"), System.Globalization.CultureInfo.InvariantCulture, out var p) ? p : 5;
        IReadOnlyDictionary<object, object?>? messages;
        try
        {
            messages = await run.CallAsync("message.get", "VM", record.Uuid, since).ConfigureAwait(false) as IReadOnlyDictionary<object, object?>;
        }
        catch (XenApiException)
        {
            return result;
        }
        foreach (var message in (messages ?? new Dictionary<object, object?>()).Values.OfType<IReadOnlyDictionary<object, object?>>())
        {
            if (message.TryGetValue("priority", out var priority) && Convert.ToInt64(priority, System.Globalization.CultureInfo.InvariantCulture) < threshold)
            {
                var time = message.TryGetValue("timestamp", out var t) && t is DateTime dt ? dt.ToString("yyyyMMdd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture) : "";
                await run.Console.PrintStderrAsync($"Message: time={time} priority={priority} name='{message.GetValueOrDefault("name")}'\n\n").ConfigureAwait(false);
            }
        }
        return result;
    }

    /// <summary>
    /// A XenAPI error as one failure line of <c>--multiple</c> shows it. Real xe gives the
    /// datamodel's sentence and the named parameters; this tree's schema carries no error
    /// sentences yet, so the code and parameters are shown as real xe shows an unknown error.
    /// </summary>
    // As the error printout of a single command: the datamodel's sentence and name: value lines,
    // or the code and its parameters for codes the datamodel does not know.
    private static async ValueTask<string> DescribeAsync(CliRun run, string code, IReadOnlyList<string> parameters)
    {
        if (CliCommandTable.DatamodelError(code) is not { } meta)
        {
            return $"{code}: [ {string.Join("; ", parameters)} ]";
        }
        var shown = new List<string>(parameters.Count);
        foreach (var parameter in parameters)
        {
            shown.Add(await CliRecords.RefConvertAsync(run.Api, parameter).ConfigureAwait(false));
        }
        return string.Join("\n", CliCommandTable.ErrorLines(meta.Params ?? [], shown).Prepend(meta.Description));
    }
}
