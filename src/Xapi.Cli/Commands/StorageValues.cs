using System.Globalization;

namespace Xapi.Cli.Commands;

/// <summary>How the storage commands read sizes, booleans, maps and objects off the command line, as real xe does.</summary>
internal static class StorageValues
{
    private const long KiB = 1024;

    /// <summary>
    /// A size: an integer, optional blanks, and an optional binary suffix (b, k, m, g, t, with or
    /// without "b"/"ib", any case); what follows the suffix is ignored, as real xe's scanf does.
    /// </summary>
    public static long Bytes(string field, string text)
    {
        if (TryBytes(text, out var size))
        {
            return size;
        }
        throw new CliFailure($"Error: Failed to parse field '{field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{text}'");
    }

    private static bool TryBytes(string text, out long size)
    {
        size = 0;
        var i = 0;
        while (i < text.Length && char.IsWhiteSpace(text[i]))
        {
            i++;
        }
        var start = i;
        if (i < text.Length && text[i] is '+' or '-')
        {
            i++;
        }
        while (i < text.Length && char.IsAsciiDigit(text[i]))
        {
            i++;
        }
        if (!long.TryParse(text.AsSpan(start, i - start), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number) || number < 0)
        {
            return false;
        }
        while (i < text.Length && char.IsWhiteSpace(text[i]))
        {
            i++;
        }
        var end = i;
        while (end < text.Length && !char.IsWhiteSpace(text[end]))
        {
            end++;
        }
        long unit = text[i..end].ToLowerInvariant() switch
        {
            "" or "b" or "bytes" => 1,
            "k" or "kb" or "kib" => KiB,
            "m" or "mb" or "mib" => KiB * KiB,
            "g" or "gb" or "gib" => KiB * KiB * KiB,
            "t" or "tb" or "tib" => KiB * KiB * KiB * KiB,
            _ => 0,
        };
        if (unit == 0 || number > long.MaxValue / unit)
        {
            return false;
        }
        size = number * unit;
        return true;
    }

    public static bool Bool(string parameter, string text) => text.ToLowerInvariant() switch
    {
        "true" or "t" or "yes" or "y" or "1" => true,
        "false" or "f" or "no" or "n" or "0" => false,
        _ => throw new CliFailure($"Error: Failed to parse parameter '{parameter}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {text}"),
    };

    /// <summary>A boolean parameter given as <c>name=value</c> or as <c>--name</c> (real xe reads both as the parameter).</summary>
    public static bool BoolParam(CliRun run, string name, bool fallback = false) =>
        run.Args.Get(name) is { } text ? Bool(name, text) : run.Args.HasFlag(name) || fallback;

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
