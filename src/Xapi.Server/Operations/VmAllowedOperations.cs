using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>
/// <c>VM.allowed_operations</c>. The VM lifecycle states the power-state rules here; until then
/// a VM allows every operation when idle and none while one runs.
/// </summary>
public sealed class VmAllowedOperations : IAllowedOperationsRule
{
    private readonly IdleAllowsAll _idle = new(VMRef.Class);

    public ClassMeta Class => VMRef.Class;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        _idle.Allowed(db, reference, values, inProgress);
}
