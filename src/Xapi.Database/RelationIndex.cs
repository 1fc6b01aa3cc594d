using System.Collections.Frozen;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// A one-to-many relation: the "one" side stores a ref (<c>VBD.VM</c>), the "many" side
/// (<c>VM.VBDs</c>) is computed from an index, so the two can never disagree.
/// </summary>
public sealed class RelationIndex
{
    private RelationIndex(int ordinal, FieldMeta manyField, FieldMeta pointerField)
    {
        Ordinal = ordinal;
        ManyField = manyField;
        PointerField = pointerField;
    }

    public int Ordinal { get; }

    /// <summary>The computed set field on the parent, e.g. <c>VM.VBDs</c>.</summary>
    public FieldMeta ManyField { get; }

    /// <summary>The stored ref field on the child, e.g. <c>VBD.VM</c>.</summary>
    public FieldMeta PointerField { get; }

    public static readonly IReadOnlyList<RelationIndex> All = Build();

    private static readonly FrozenDictionary<FieldMeta, RelationIndex> ByManyField =
        All.ToFrozenDictionary(r => r.ManyField);

    private static readonly FrozenDictionary<ClassMeta, RelationIndex[]> ByChildClass =
        All.GroupBy(r => r.PointerField.Owner).ToFrozenDictionary(g => g.Key, g => g.ToArray());

    private static readonly FrozenDictionary<ClassMeta, RelationIndex[]> ByParentClass =
        All.GroupBy(r => r.ManyField.Owner).ToFrozenDictionary(g => g.Key, g => g.ToArray());

    public static RelationIndex? ForManyField(FieldMeta field) => ByManyField.GetValueOrDefault(field);

    /// <summary>The relations whose computed "many" side is a field of <paramref name="cls"/>.</summary>
    public static IReadOnlyList<RelationIndex> ForParentClass(ClassMeta cls) => ByParentClass.GetValueOrDefault(cls) ?? [];

    public static IReadOnlyList<RelationIndex> ForChildClass(ClassMeta cls) => ByChildClass.GetValueOrDefault(cls) ?? [];

    private static List<RelationIndex> Build()
    {
        var list = new List<RelationIndex>();
        foreach (var cls in ApiSchema.Classes)
        {
            foreach (var field in cls.Fields)
            {
                if (field.ManyOf is null)
                {
                    continue;
                }
                var dot = field.ManyOf.IndexOf('.');
                var childClass = ApiSchema.ClassesByName[field.ManyOf[..dot]];
                list.Add(new RelationIndex(list.Count, field, childClass.FieldsByName[field.ManyOf[(dot + 1)..]]));
            }
        }
        return list;
    }
}
