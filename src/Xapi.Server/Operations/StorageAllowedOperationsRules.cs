using Xapi.Model;
using Xapi.Storage.Service;

namespace Xapi.Server.Operations;

/// <summary><c>SR.allowed_operations</c>: what the SR type's driver can do, less what the SR's state forbids.</summary>
public sealed class SrAllowedOperations : IAllowedOperationsRule
{
    public ClassMeta Class => SRRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        StorageAllowedOperations.ForSr(db, new SRRef(reference), values, inProgress);
}

/// <summary><c>VDI.allowed_operations</c>: what the driver can do, less what attachment and running operations forbid.</summary>
public sealed class VdiAllowedOperations : IAllowedOperationsRule
{
    public ClassMeta Class => VDIRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        StorageAllowedOperations.ForVdi(db, new VDIRef(reference), values, inProgress);
}
