using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// One object, immutable. A write replaces the row; readers holding the old one keep a
/// consistent view. Generations say when it was created and last modified (the event source).
/// </summary>
public sealed class Row
{
    internal Row(ClassMeta cls, string reference, object?[] values, long created, long modified)
    {
        Class = cls;
        Ref = reference;
        Values = values;
        Created = created;
        Modified = modified;
    }

    public ClassMeta Class { get; }

    public string Ref { get; }

    /// <summary>Stored values by field ordinal. Computed "many" fields are read through the snapshot.</summary>
    public IReadOnlyList<object?> Values { get; }

    public long Created { get; }

    public long Modified { get; }

    public object? this[FieldMeta field] => Values[field.Ordinal];

    public string Uuid => Class.UuidField is { } f ? (string)Values[f.Ordinal]! : "";

    internal object?[] CopyValues() => (object?[])((object?[])Values).Clone();

    internal Row With(object?[] values, long modified) => new(Class, Ref, values, Created, modified);

    internal Row Touch(long modified) => new(Class, Ref, (object?[])Values, Created, modified);
}

/// <summary>What is left of a deleted row, so event readers learn of the delete.</summary>
public sealed record Tombstone(ClassMeta Class, string Ref, long Created, long Deleted, string Uuid);
