using Xapi.Model;

namespace Xapi.Database;

public enum RowWriteKind : byte
{
    Create = 1,
    Update = 2,
    Touch = 3,
    Delete = 4,
}

/// <summary>
/// One step of a transaction as the journal records it. For updates, the ordinals of the
/// fields that changed; the values are read from the committed snapshot.
/// </summary>
public sealed record RowWrite(RowWriteKind Kind, ClassMeta Class, string Ref, IReadOnlyList<int>? ChangedFields);
