namespace Xapi.Model;

/// <summary>
/// Runtime values are plain CLR objects, one per datamodel type:
/// string (string, ref, enum wire name), long (int), double (float), bool, DateTime (UTC),
/// <see cref="IReadOnlyList{T}"/> of object (set), <see cref="ValueMap"/> (map, record).
/// They are never mutated after construction, so rows can share them freely.
/// </summary>
public sealed class ValueMap : IReadOnlyDictionary<object, object?>
{
    public static readonly ValueMap Empty = new(new Dictionary<object, object?>());

    private readonly Dictionary<object, object?> _items;

    // Callers hand over ownership of the dictionary: it must not be touched afterwards.
    public ValueMap(Dictionary<object, object?> items) => _items = items;

    public static ValueMap FromPairs(IEnumerable<KeyValuePair<object, object?>> pairs)
    {
        var items = new Dictionary<object, object?>();
        foreach (var (key, value) in pairs)
        {
            items[key] = value;
        }
        return new ValueMap(items);
    }

    public object? this[object key] => _items[key];

    public IEnumerable<object> Keys => _items.Keys;

    public IEnumerable<object?> Values => _items.Values;

    public int Count => _items.Count;

    public bool ContainsKey(object key) => _items.ContainsKey(key);

    public bool TryGetValue(object key, out object? value) => _items.TryGetValue(key, out value);

    public ValueMap With(object key, object? value)
    {
        var copy = new Dictionary<object, object?>(_items) { [key] = value };
        return new ValueMap(copy);
    }

    public ValueMap Without(object key)
    {
        if (!_items.ContainsKey(key))
        {
            return this;
        }
        var copy = new Dictionary<object, object?>(_items);
        copy.Remove(key);
        return new ValueMap(copy);
    }

    // The struct enumerator: encoding a reply walks thousands of maps, and a boxed enumerator each added up.
    public Dictionary<object, object?>.Enumerator GetEnumerator() => _items.GetEnumerator();

    IEnumerator<KeyValuePair<object, object?>> IEnumerable<KeyValuePair<object, object?>>.GetEnumerator() => _items.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => _items.GetEnumerator();
}

public static class ValueSet
{
    public static readonly IReadOnlyList<object?> Empty = [];
}
