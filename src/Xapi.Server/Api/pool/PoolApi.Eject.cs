using Microsoft.Extensions.Logging;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Ejecting a member, in the real server's order: called at the master, checked there, run on
/// the ejected host (which becomes the master of a new pool of its own), and then the pool forgets
/// the host and what only it held.
/// </summary>
public sealed partial class PoolApi
{
    // Real hosts raise an OCaml exception with no API error for it: clients see INTERNAL_ERROR with its name.
    private const string CannotEjectMaster = "Cannot_eject_master";
    private const string VmResidentOnHost = "VM resident on host";

    public async ValueTask Eject(CallContext context, HostRef host)
    {
        if (context.FromPool)
        {
            await membership.LeavePoolAsync(StartAfresh).ConfigureAwait(false);
            return;
        }
        var snapshot = context.Snapshot;
        var record = snapshot.Get(host);
        if (host.Value == firstBoot.HostRef)
        {
            throw XenApiErrors.InternalError(CannotEjectMaster);
        }
        if (snapshot.All<VMRecord>().Any(v => v.ResidentOn == host && !v.IsControlDomain && v.PowerState != VmPowerState.Halted))
        {
            throw XenApiErrors.OperationNotAllowed(VmResidentOnHost);
        }
        if (snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics) && !metrics.Live)
        {
            throw XenApiErrors.HostOffline(host.Value);
        }
        await Forwarder.ForwardAsync(snapshot, host, context.Message, [context.RequiredSession.Value, host.Value], context.Cancellation).ConfigureAwait(false);
        var forgotten = context.Write(tx => HostRemoval.Forget(tx, host));
        logger.LogInformation("Ejected host {Host} from the pool; forgot {Rows} objects only it held", record.NameLabel, forgotten);
    }
}
