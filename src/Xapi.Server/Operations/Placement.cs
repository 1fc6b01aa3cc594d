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
    // A new VDI's record names its SR by the field's wire name.
    private static readonly string VdiSrField = VDIRef.Class.Fields[VDIFields.SR].Name;

    /// <summary>The host the master picks to start a VM on (<see cref="HostSelection.ChosenHost"/>); null when none can, so the local start says why.</summary>
    public Func<CallContext, VMRef, HostRef?> ChooseHostForVm { get; set; } = static (_, _) => null;

    /// <summary>The other host a call runs on, or null when it runs here.</summary>
    public HostRef? RemoteHost(HandlerContract.PlacementDeclaration declaration, object?[] args, CallContext context)
    {
        if (membership.IsMember)
        {
            return null;
        }
        if (declaration.Selection == HostSelection.StorageHost)
        {
            return StorageHost(context, args[declaration.ArgumentIndex]);
        }
        if (args[declaration.ArgumentIndex] is not string argument)
        {
            return null;
        }
        var host = declaration.Selection switch
        {
            HostSelection.ResidentHost when declaration.Class == PBDRef.Class =>
                context.Snapshot.TryGet(new PBDRef(argument), out PBDRecord pbd) ? pbd.Host : HostRef.Null,
            // A VM's devices are plugged, unplugged and changed where the VM runs.
            HostSelection.ResidentHost when declaration.Class == VBDRef.Class =>
                context.Snapshot.TryGet(new VBDRef(argument), out VBDRecord vbd) ? ResidentHostOf(context, vbd.VM) : HostRef.Null,
            HostSelection.ResidentHost when declaration.Class == VIFRef.Class =>
                context.Snapshot.TryGet(new VIFRef(argument), out VIFRecord vif) ? ResidentHostOf(context, vif.VM) : HostRef.Null,
            HostSelection.ResidentHost => ResidentHostOf(context, new VMRef(argument)),
            HostSelection.NamedHost => new HostRef(argument),
            _ => ChooseHostForVm(context, new VMRef(argument)) ?? HostRef.Null,
        };
        return host.IsNull || host.Value == membership.ThisHost || !context.Snapshot.Exists(host) ? null : host;
    }

    /// <summary>The other host an SR's or a VDI's operation runs on (the argument: an SR, a VDI, or a new VDI's record), or null for this one.</summary>
    private HostRef? StorageHost(CallContext context, object? argument)
    {
        var snapshot = context.Snapshot;
        var sr = argument switch
        {
            ValueMap record when record.TryGetValue(VdiSrField, out var value) && value is string reference => new SRRef(reference),
            string reference when snapshot.TryGet(new VDIRef(reference), out VDIRecord vdi) => vdi.SR,
            string reference => new SRRef(reference),
            _ => SRRef.Null,
        };
        if (sr.IsNull || !snapshot.TryGet(sr, out var srRecord))
        {
            return null;
        }
        var attached = srRecord.PBDs.Where(snapshot.Exists).Select(snapshot.Get).Where(p => p.CurrentlyAttached).ToList();
        if (attached.Count == 0 || attached.Any(p => p.Host.Value == membership.ThisHost))
        {
            return null;
        }
        return snapshot.Exists(attached[0].Host) ? attached[0].Host : null;
    }

    private static HostRef ResidentHostOf(CallContext context, VMRef vm) =>
        context.Snapshot.TryGet(vm, out VMRecord record) ? record.ResidentOn : HostRef.Null;
}
