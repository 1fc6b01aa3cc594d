using System.Collections.Concurrent;
using System.Globalization;

namespace Xapi.Model;

public enum XTypeKind
{
    Void,
    String,
    Int,
    Float,
    Bool,
    DateTime,
    Enum,
    Ref,
    Set,
    Map,
    Record,
    Option,

    /// <summary><c>event.from</c>'s struct of events, valid_ref_counts and token.</summary>
    EventBatch,
}

/// <summary>
/// A datamodel type, parsed from the schema's type strings (<c>string</c>, <c>enum NAME</c>,
/// <c>T set</c>, <c>(K -&gt; V) map</c>, <c>CLASS ref</c>, <c>CLASS record</c>, <c>T option</c>).
/// Knows how to turn a decoded wire value into the canonical runtime value.
/// </summary>
public sealed class XType
{
    private static readonly ConcurrentDictionary<string, XType> Cache = new(StringComparer.Ordinal);

    public static readonly DateTime Epoch = new(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);
    public const string NullRef = "OpaqueRef:NULL";

    private XType(string text, XTypeKind kind, string? name = null, XType? element = null, XType? key = null)
    {
        Text = text;
        Kind = kind;
        Name = name;
        Element = element;
        Key = key;
    }

    public string Text { get; }

    public XTypeKind Kind { get; }

    /// <summary>Enum name for <see cref="XTypeKind.Enum"/>, class name for refs and records.</summary>
    public string? Name { get; }

    /// <summary>Element type of sets and options; value type of maps.</summary>
    public XType? Element { get; }

    /// <summary>Key type of maps.</summary>
    public XType? Key { get; }

    public EnumMeta EnumMeta => ApiSchema.EnumsByName[Name!];

    public override string ToString() => Text;

    public static XType Parse(string text) => Cache.GetOrAdd(text, static t => ParseUncached(t.Trim()));

    private static XType ParseUncached(string text)
    {
        switch (text)
        {
            case "void": return new XType(text, XTypeKind.Void);
            case "string": return new XType(text, XTypeKind.String);
            case "int": return new XType(text, XTypeKind.Int);
            case "float": return new XType(text, XTypeKind.Float);
            case "bool": return new XType(text, XTypeKind.Bool);
            case "datetime": return new XType(text, XTypeKind.DateTime);
            case "event_batch": return new XType(text, XTypeKind.EventBatch);
        }
        if (text.EndsWith(" map", StringComparison.Ordinal) && text.StartsWith('('))
        {
            var inner = text[1..text.LastIndexOf(')')];
            var arrow = FindArrow(inner);
            return new XType(text, XTypeKind.Map, element: Parse(inner[(arrow + 4)..]), key: Parse(inner[..arrow]));
        }
        if (text.EndsWith(" set", StringComparison.Ordinal))
        {
            return new XType(text, XTypeKind.Set, element: Parse(text[..^4]));
        }
        if (text.EndsWith(" option", StringComparison.Ordinal))
        {
            return new XType(text, XTypeKind.Option, element: Parse(text[..^7]));
        }
        if (text.EndsWith(" ref", StringComparison.Ordinal))
        {
            return new XType(text, XTypeKind.Ref, text[..^4]);
        }
        if (text.EndsWith(" record", StringComparison.Ordinal))
        {
            return new XType(text, XTypeKind.Record, text[..^7]);
        }
        if (text.StartsWith("enum ", StringComparison.Ordinal))
        {
            return new XType(text, XTypeKind.Enum, text[5..]);
        }
        throw new FormatException($"Unknown datamodel type '{text}'");
    }

    // Finds the top-level " -> " of a map's inner text; nested maps are parenthesised.
    private static int FindArrow(string inner)
    {
        var depth = 0;
        for (var i = 0; i < inner.Length - 3; i++)
        {
            if (inner[i] == '(')
            {
                depth++;
            }
            else if (inner[i] == ')')
            {
                depth--;
            }
            else if (depth == 0 && string.CompareOrdinal(inner, i, " -> ", 0, 4) == 0)
            {
                return i;
            }
        }
        throw new FormatException($"Malformed map type '({inner}) map'");
    }

    /// <summary>The zero value of this type, used where a field has no declared default.</summary>
    public object? ZeroValue() => Kind switch
    {
        XTypeKind.String => "",
        XTypeKind.Int => 0L,
        XTypeKind.Float => 0.0,
        XTypeKind.Bool => false,
        XTypeKind.DateTime => Epoch,
        XTypeKind.Enum => EnumMeta.Values[0],
        XTypeKind.Ref => NullRef,
        XTypeKind.Set => ValueSet.Empty,
        XTypeKind.Map or XTypeKind.Record => ValueMap.Empty,
        _ => null,
    };

    /// <summary>
    /// Converts a decoded wire value (string, long, double, bool, DateTime, byte[], null,
    /// list, string-keyed dictionary) into this type's canonical runtime value.
    /// </summary>
    /// <exception cref="XenApiException">FIELD_TYPE_ERROR naming <paramref name="what"/>.</exception>
    public object? Coerce(object? wire, string what)
    {
        switch (Kind)
        {
            case XTypeKind.Void:
                return null;
            case XTypeKind.String:
            case XTypeKind.Ref:
                return wire switch
                {
                    string s => s,
                    long or int when Kind == XTypeKind.String => Convert.ToString(wire, CultureInfo.InvariantCulture),
                    _ => throw XenApiErrors.FieldTypeError(what),
                };
            case XTypeKind.Int:
                return wire switch
                {
                    long l => l,
                    int i => (long)i,
                    double d when d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => (long)d,
                    string s when long.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) => l,
                    _ => throw XenApiErrors.FieldTypeError(what),
                };
            case XTypeKind.Float:
                return wire switch
                {
                    double d => d,
                    long l => (double)l,
                    int i => (double)i,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                    _ => throw XenApiErrors.FieldTypeError(what),
                };
            case XTypeKind.Bool:
                return wire switch
                {
                    bool b => b,
                    string s when s.Equals("true", StringComparison.OrdinalIgnoreCase) || s == "1" => true,
                    string s when s.Equals("false", StringComparison.OrdinalIgnoreCase) || s == "0" => false,
                    _ => throw XenApiErrors.FieldTypeError(what),
                };
            case XTypeKind.DateTime:
                return wire switch
                {
                    DateTime dt => dt.Kind == DateTimeKind.Utc ? dt : DateTime.SpecifyKind(dt, DateTimeKind.Utc),
                    string s when DateTimeFormat.TryParse(s, out var dt) => dt,
                    _ => throw XenApiErrors.FieldTypeError(what),
                };
            case XTypeKind.Enum:
                if (wire is string name && EnumMeta.TryCanonical(name, out var canonical))
                {
                    return canonical;
                }
                throw XenApiErrors.FieldTypeError(what);
            case XTypeKind.Option:
                return wire is null ? null : Element!.Coerce(wire, what);
            case XTypeKind.Set:
                if (wire is IReadOnlyList<object?> list)
                {
                    var result = new object?[list.Count];
                    for (var i = 0; i < result.Length; i++)
                    {
                        result[i] = Element!.Coerce(list[i], what);
                    }
                    return result;
                }
                throw XenApiErrors.FieldTypeError(what);
            case XTypeKind.Map:
                if (wire is IReadOnlyDictionary<string, object?> dict)
                {
                    var items = new Dictionary<object, object?>(dict.Count);
                    foreach (var (key, value) in dict)
                    {
                        items[Key!.Coerce(key, what)!] = Element!.Coerce(value, what);
                    }
                    return new ValueMap(items);
                }
                throw XenApiErrors.FieldTypeError(what);
            case XTypeKind.Record:
                if (wire is IReadOnlyDictionary<string, object?> record)
                {
                    var cls = ApiSchema.ClassesByName[Name!];
                    var items = new Dictionary<object, object?>(record.Count);
                    foreach (var (key, value) in record)
                    {
                        if (cls.FieldsByName.TryGetValue(key, out var field))
                        {
                            items[field.Name] = field.Type.Coerce(value, field.Name);
                        }
                    }
                    return new ValueMap(items);
                }
                throw XenApiErrors.FieldTypeError(what);
            default:
                throw new InvalidOperationException($"Unhandled type kind {Kind}");
        }
    }

    /// <summary>The textual form used by the where-expression language and by <c>xe</c>.</summary>
    public static string ToDisplayString(object? value) => value switch
    {
        null => "",
        string s => s,
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        int i => i.ToString(CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        DateTime dt => DateTimeFormat.Format(dt),
        IReadOnlyDictionary<object, object?> m => string.Join("; ", m.Select(kv => $"{ToDisplayString(kv.Key)}: {ToDisplayString(kv.Value)}")),
        IReadOnlyList<object?> list => string.Join("; ", list.Select(ToDisplayString)),
        _ => value.ToString() ?? "",
    };
}

public static class DateTimeFormat
{
    private static readonly string[] Formats =
    [
        "yyyyMMdd'T'HH:mm:ss'Z'", "yyyyMMdd'T'HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss'Z'", "yyyy-MM-dd'T'HH:mm:ss",
        "yyyyMMdd'T'HHmmss'Z'", "yyyy-MM-dd'T'HH:mm:ss.FFFFFFF'Z'", "yyyyMMdd'T'HH:mm:ss.FFFFFFF'Z'",
    ];

    public static string Format(DateTime value) =>
        value.ToUniversalTime().ToString("yyyyMMdd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>The length of what <see cref="Format"/> and <see cref="Write"/> produce.</summary>
    public const int Length = 18;

    /// <summary>
    /// <see cref="Format"/> as ASCII bytes into the first <see cref="Length"/> bytes of
    /// <paramref name="destination"/>, without a string: replies carry thousands of datetimes.
    /// </summary>
    public static void Write(DateTime value, Span<byte> destination)
    {
        var utc = value.ToUniversalTime();
        var d = destination[..Length];
        Digits(d[..4], utc.Year);
        Digits(d.Slice(4, 2), utc.Month);
        Digits(d.Slice(6, 2), utc.Day);
        d[8] = (byte)'T';
        Digits(d.Slice(9, 2), utc.Hour);
        d[11] = (byte)':';
        Digits(d.Slice(12, 2), utc.Minute);
        d[14] = (byte)':';
        Digits(d.Slice(15, 2), utc.Second);
        d[17] = (byte)'Z';
    }

    private static void Digits(Span<byte> destination, int value)
    {
        for (var i = destination.Length - 1; i >= 0; i--)
        {
            destination[i] = (byte)('0' + value % 10);
            value /= 10;
        }
    }

    public static bool TryParse(string text, out DateTime value)
    {
        if (DateTime.TryParseExact(text.Trim(), Formats, CultureInfo.InvariantCulture,
                DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out value))
        {
            value = DateTime.SpecifyKind(value, DateTimeKind.Utc);
            return true;
        }
        return DateTime.TryParse(text, CultureInfo.InvariantCulture,
            DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out value);
    }
}
