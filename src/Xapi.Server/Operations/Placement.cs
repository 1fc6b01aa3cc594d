using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Pool;

namespace Xapi.Server.Operations;

/// <summary>
/// Where a call declared with <see cref="RunsOnAttribute"/> runs. Only the master decides: a
/// member runs what reaches it (forwarded by the master, or from its local root).
/// </summary>
public sealed class Placement(PoolMembership membership)
{
    /// <summary>The host the master picks to start a VM on (<see cref="HostSelection.ChosenHost"/>); null when none can, so the local start says why.</summary>
    public Func<CallContext, VMRef, HostRef?> ChooseHostForVm { get; set; } = static (_, _) => null;

    /// <summary>The other host a call runs on, or null when it runs here.</summary>
    public HostRef? RemoteHost(HandlerContract.PlacementDeclaration declaration, object?[] args, CallContext context)
    {
        if (membership.IsMember || args[declaration.ArgumentIndex] is not string argument)
        {
            return null;
        }
        var host = declaration.Selection switch
        {
            HostSelection.ResidentHost when declaration.Class == PBDRef.Class =>
                context.Snapshot.TryGet(new PBDRef(argument), out PBDRecord pbd) ? pbd.Host : HostRef.Null,
            HostSelection.ResidentHost => context.Snapshot.TryGet(new VMRef(argument), out VMRecord vm) ? vm.ResidentOn : HostRef.Null,
            HostSelection.NamedHost => new HostRef(argument),
            _ => ChooseHostForVm(context, new VMRef(argument)) ?? HostRef.Null,
        };
        return host.IsNull || host.Value == membership.ThisHost || !context.Snapshot.Exists(host) ? null : host;
    }
}
