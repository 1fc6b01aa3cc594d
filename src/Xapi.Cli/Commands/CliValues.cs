using System.Globalization;

namespace Xapi.Cli.Commands;

/// <summary>Real xe's readings of parameter values (record_util.ml): booleans and sizes.</summary>
public static class CliValues
{
    /// <summary>
    /// A boolean parameter, false when absent: <c>--name</c>, or <c>name=</c> one of
    /// true|t|yes|y|1|false|f|no|n|0 in any case; any other word is an error naming the parameter.
    /// </summary>
    public static bool BoolParam(CliRun run, string name)
    {
        if (run.Args.Flags.Contains(name))
        {
            return true;
        }
        return run.Args.Get(name) is { } value && ParseBool(name, value);
    }

    public static bool ParseBool(string name, string value) => value.ToLowerInvariant() switch
    {
        "true" or "t" or "yes" or "y" or "1" => true,
        "false" or "f" or "no" or "n" or "0" => false,
        _ => throw new CliFailure($"Error: Failed to parse parameter '{name}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {value}"),
    };

    /// <summary>
    /// A size: a whole number, optional blanks, then an optional unit (b, bytes; k, kb, kib;
    /// m, mb, mib; g, gb, gib; t, tb, tib — all binary, any case).
    /// </summary>
    public static long ParseBytes(string field, string text)
    {
        var digits = 0;
        if (digits < text.Length && text[digits] is '-' or '+')
        {
            digits++;
        }
        while (digits < text.Length && char.IsAsciiDigit(text[digits]))
        {
            digits++;
        }
        var shift = text[digits..].Trim().ToLowerInvariant() switch
        {
            "" or "b" or "bytes" => 0,
            "k" or "kb" or "kib" => 10,
            "m" or "mb" or "mib" => 20,
            "g" or "gb" or "gib" => 30,
            "t" or "tb" or "tib" => 40,
            _ => -1,
        };
        if (shift < 0 || !long.TryParse(text.AsSpan(0, digits), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number)
            || number < 0 || number > long.MaxValue >> shift)
        {
            throw new CliFailure($"Error: Failed to parse field '{field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{text}'");
        }
        return number << shift;
    }
}
