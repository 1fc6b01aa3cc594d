using System.Globalization;

namespace Xapi.Server.Api;

/// <summary>
/// Floats as real hosts print them in error parameters (OCaml's string_of_float: twelve significant
/// digits, and a trailing dot on whole numbers): 1200 is "1200.", 0.5 is "0.5".
/// </summary>
internal static class OcamlFloat
{
    public static string Format(double value)
    {
        var text = value.ToString("G12", CultureInfo.InvariantCulture).Replace('E', 'e');
        return text.AsSpan().IndexOfAny('.', 'e') >= 0 || double.IsNaN(value) || double.IsInfinity(value) ? text : text + ".";
    }
}
