using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// Referential integrity of what a client writes, by each field's generated
/// <see cref="ReferenceRule"/>. The checks read the writing transaction, which runs under the
/// write lock: an object another call destroys is either already gone when the check reads,
/// or is destroyed after this write has committed — never between the check and the write.
/// </summary>
public static class References
{
    /// <summary>
    /// Creates a row of <paramref name="cls"/> holding <paramref name="values"/> (a whole row, as
    /// a class's own create handler builds it), refused when a constructor field names an object
    /// that does not exist.
    /// </summary>
    /// <exception cref="XenApiException">HANDLE_INVALID [class, ref] (or the field's INVALID_VALUE).</exception>
    public static string CreateRowCheckingReferences(this Transaction tx, ClassMeta cls, object?[] values, string? reference = null) =>
        tx.CreateRow(cls, row =>
        {
            values.CopyTo(row, 0);
            foreach (var field in cls.Fields)
            {
                if (field.References is not null && field.IsConstructorArgument && field.ManyOf is null)
                {
                    tx.CheckReferences(field, row);
                }
            }
        }, reference);

    /// <summary>Checks a field's whole new value, as the row being written will hold it.</summary>
    /// <exception cref="XenApiException">HANDLE_INVALID [class, ref] (or the field's INVALID_VALUE).</exception>
    public static void CheckReferences(this Transaction tx, FieldMeta field, IReadOnlyList<object?> row)
    {
        if (field.References is null)
        {
            return;
        }
        var value = row[field.Ordinal];
        if (field.Type.Kind == XTypeKind.Ref && value is XType.NullRef && field.AllowsNullIn(row))
        {
            return;
        }
        Check(tx, field, field.Type, value);
    }

    /// <summary>Checks a part of a field's value (a set item, a map key or value) of the given type.</summary>
    public static void CheckReferences(this Transaction tx, FieldMeta field, XType type, object? value)
    {
        if (field.References is not null)
        {
            Check(tx, field, type, value);
        }
    }

    // Inside sets and maps OpaqueRef:NULL is no object, so it is refused like any unknown ref.
    private static void Check(Transaction tx, FieldMeta field, XType type, object? value)
    {
        switch (type.Kind)
        {
            case XTypeKind.Ref:
                var target = ApiSchema.ClassesByName[type.Name!];
                if (target.IsStored && (value is not string reference || !tx.TryGet(target, reference, out _)))
                {
                    var text = value as string ?? "";
                    throw field.References!.InvalidValueName is { } name
                        ? XenApiErrors.InvalidValue(name, text)
                        : XenApiErrors.HandleInvalid(target.Name, text);
                }
                break;
            case XTypeKind.Set when value is IReadOnlyList<object?> items:
                foreach (var item in items)
                {
                    Check(tx, field, type.Element!, item);
                }
                break;
            case XTypeKind.Map when value is IReadOnlyDictionary<object, object?> map:
                foreach (var (key, item) in map)
                {
                    Check(tx, field, type.Key!, key);
                    Check(tx, field, type.Element!, item);
                }
                break;
            case XTypeKind.Option when value is not null:
                Check(tx, field, type.Element!, value);
                break;
        }
    }
}
