using Xapi.Model;

namespace Xapi.Storage.Service;

/// <summary>The sm_config keys storage owns, and conversions between maps and string dictionaries.</summary>
public static class SmConfig
{
    /// <summary>The VDI a chain node is a delta over (SM's name, kept for clients that read it).</summary>
    public const string VhdParent = "vhd-parent";

    public static IReadOnlyDictionary<string, string> Strings(ValueMap map) =>
        map.Where(p => p.Key is string && p.Value is string).ToDictionary(p => (string)p.Key, p => (string)p.Value!, StringComparer.Ordinal);

    public static ValueMap Map(IEnumerable<KeyValuePair<string, string>> pairs) =>
        ValueMap.FromPairs(pairs.Select(p => new KeyValuePair<object, object?>(p.Key, p.Value)));
}
