using System.Globalization;

namespace Xapi.Cli.Commands;

/// <summary>Real xe's readings of parameter values (record_util.ml): booleans and sizes.</summary>
public static class CliValues
{
    /// <summary>
    /// A boolean parameter given as <c>name=value</c> (one of true|t|yes|y|1|false|f|no|n|0 in any
    /// case; any other word is an error naming the parameter) or as <c>--name</c>;
    /// <paramref name="fallback"/> when absent.
    /// </summary>
    public static bool BoolParam(CliRun run, string name, bool fallback = false) =>
        run.Args.Get(name) is { } value ? ParseBool(name, value) : run.Args.HasFlag(name) || fallback;

    public static bool ParseBool(string name, string value) => value.ToLowerInvariant() switch
    {
        "true" or "t" or "yes" or "y" or "1" => true,
        "false" or "f" or "no" or "n" or "0" => false,
        _ => throw new CliFailure($"Error: Failed to parse parameter '{name}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {value}"),
    };

    /// <summary>
    /// A size: an integer, optional blanks, and an optional binary unit (b, bytes; k, kb, kib;
    /// m, mb, mib; g, gb, gib; t, tb, tib — any case); words after the unit are ignored, as real
    /// xe's scanf ignores them.
    /// </summary>
    public static long ParseBytes(string field, string text) => TryParseBytes(text, out var size) ? size
        : throw new CliFailure($"Error: Failed to parse field '{field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{text}'");

    private static bool TryParseBytes(string text, out long size)
    {
        size = 0;
        var i = SkipBlanks(text, 0);
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
        i = SkipBlanks(text, i);
        var end = i;
        while (end < text.Length && !char.IsWhiteSpace(text[end]))
        {
            end++;
        }
        var shift = text[i..end].ToLowerInvariant() switch
        {
            "" or "b" or "bytes" => 0,
            "k" or "kb" or "kib" => 10,
            "m" or "mb" or "mib" => 20,
            "g" or "gb" or "gib" => 30,
            "t" or "tb" or "tib" => 40,
            _ => -1,
        };
        if (shift < 0 || number > long.MaxValue >> shift)
        {
            return false;
        }
        size = number << shift;
        return true;
    }

    private static int SkipBlanks(string text, int from)
    {
        while (from < text.Length && char.IsWhiteSpace(text[from]))
        {
            from++;
        }
        return from;
    }
}
