namespace Xapi.Cli.Commands;

/// <summary>How the storage commands read maps and objects off the command line, as real xe does (sizes and booleans: <see cref="CliValues"/>).</summary>
internal static class StorageValues
{
    /// <summary>
    /// Every <c>prefix:key=value</c> parameter as a map: the key is what follows the prefix and
    /// one separator character (so <c>sm-config-key</c> counts too, as in real xe).
    /// </summary>
    public static Dictionary<string, object?> Map(CliRun run, string prefix)
    {
        var map = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in run.Args.Params)
        {
            if (key.StartsWith(prefix, StringComparison.Ordinal) && key.Length > prefix.Length + 1)
            {
                map[key[(prefix.Length + 1)..]] = value;
            }
        }
        return map;
    }

    /// <summary>The object of a class with this uuid: the server's UUID_INVALID when there is none.</summary>
    public static async ValueTask<string> ByUuidAsync(CliRun run, string cls, string uuid) =>
        (string)(await run.CallAsync($"{cls}.get_by_uuid", uuid).ConfigureAwait(false))!;

    public static async ValueTask<string> UuidOfAsync(CliRun run, string cls, string reference) =>
        (string)(await run.CallAsync($"{cls}.get_uuid", reference).ConfigureAwait(false))!;
}
