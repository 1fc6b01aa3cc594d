using System.Diagnostics.CodeAnalysis;

namespace Xapi.Model;

/// <summary>
/// An object's record as clients see it: one value per field of <see cref="Class"/>, in
/// datamodel order. Kept as the class plus a values array, not a dictionary, so that building
/// thousands of records for <c>get_all_records</c> or an <c>event.from</c> dump costs one array
/// each, and the wire writers can encode them with field names they encoded once per class.
/// Code that expects a record as a map reads it as one, keyed by field name.
/// </summary>
public sealed class RecordValue : IReadOnlyDictionary<object, object?>
{
    private readonly object?[] _values;

    // Callers hand over the array: it must not be touched afterwards (rows may share it).
    public RecordValue(ClassMeta cls, object?[] values)
    {
        if (values.Length != cls.Fields.Count)
        {
            throw new ArgumentException($"{cls.Name} has {cls.Fields.Count} fields, not {values.Length}", nameof(values));
        }
        Class = cls;
        _values = values;
    }

    public ClassMeta Class { get; }

    /// <summary>The values by field ordinal.</summary>
    public ReadOnlySpan<object?> FieldValues => _values;

    public object? this[object key] =>
        TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"{Class.Name} has no field '{key}'");

    public IEnumerable<object> Keys => Class.Fields.Select(f => (object)f.Name);

    public IEnumerable<object?> Values => _values;

    public int Count => _values.Length;

    public bool ContainsKey(object key) => key is string name && Class.FieldsByName.ContainsKey(name);

    public bool TryGetValue(object key, [MaybeNullWhen(false)] out object? value)
    {
        if (key is string name && Class.FieldsByName.TryGetValue(name, out var field))
        {
            value = _values[field.Ordinal];
            return true;
        }
        value = null;
        return false;
    }

    public IEnumerator<KeyValuePair<object, object?>> GetEnumerator()
    {
        var fields = Class.Fields;
        for (var i = 0; i < _values.Length; i++)
        {
            yield return new KeyValuePair<object, object?>(fields[i].Name, _values[i]);
        }
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
