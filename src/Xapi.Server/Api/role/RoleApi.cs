using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Permission queries over the role records. A permission role has no subroles and stands
/// for itself; a composite role stands for every permission below it.
/// </summary>
public sealed class RoleApi : IRoleApi<CallContext>
{
    public ValueTask<IReadOnlyList<RoleRef>> GetPermissions(CallContext context, RoleRef self) =>
        ValueTask.FromResult<IReadOnlyList<RoleRef>>(Expand(context.Snapshot, self).Select(r => r.Ref).ToArray());

    public ValueTask<IReadOnlyList<string>> GetPermissionsNameLabel(CallContext context, RoleRef self) =>
        ValueTask.FromResult<IReadOnlyList<string>>(Expand(context.Snapshot, self).Select(r => r.NameLabel).ToArray());

    /// <summary>The roles holding a permission, the permission itself excepted; none for an unknown one.</summary>
    public ValueTask<IReadOnlyList<RoleRef>> GetByPermission(CallContext context, RoleRef permission) =>
        ValueTask.FromResult(Holders(context.Snapshot, r => r.Ref == permission));

    public ValueTask<IReadOnlyList<RoleRef>> GetByPermissionNameLabel(CallContext context, string label) =>
        ValueTask.FromResult(Holders(context.Snapshot, r => r.NameLabel == label));

    private static IReadOnlyList<RoleRef> Holders(IRowReader db, Func<RoleRecord, bool> isPermission) =>
        db.All<RoleRecord>()
            .Where(role => !isPermission(role) && role.Subroles.Count > 0 && Expand(db, role.Ref).Any(isPermission))
            .Select(role => role.Ref)
            .ToArray();

    // The leaves below a role, each once; a leaf expands to itself.
    private static List<RoleRecord> Expand(IRowReader db, RoleRef root)
    {
        var leaves = new List<RoleRecord>();
        var seen = new HashSet<RoleRef>();
        var pending = new Stack<RoleRef>([root]);
        while (pending.TryPop(out var reference))
        {
            if (!seen.Add(reference))
            {
                continue;
            }
            var role = db.Get(reference);
            if (role.Subroles.Count == 0)
            {
                leaves.Add(role);
                continue;
            }
            foreach (var subrole in role.Subroles.Reverse())
            {
                pending.Push(subrole);
            }
        }
        return leaves;
    }
}
