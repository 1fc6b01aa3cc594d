using Microsoft.Extensions.Logging;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// <c>pool.designate_new_master</c>: an orderly hand-over. The master stops committing, the new
/// master takes every change and becomes master, the old one follows it, and the other members
/// are pointed at it. No acknowledged write is lost: writes that arrive meanwhile wait and then
/// go to the new master.
/// </summary>
public sealed partial class PoolApi
{
    public async ValueTask DesignateNewMaster(CallContext context, HostRef host)
    {
        if (context.FromPool)
        {
            // The master asks this member to take over.
            await membership.TakeOverAsync().ConfigureAwait(false);
            var me = new HostRef(firstBoot.HostRef);
            context.Write(tx => tx.Update(tx.All<PoolRecord>().Single().Ref, p => p.Master = me));
            return;
        }
        var snapshot = context.Snapshot;
        var target = snapshot.Get(host);
        if (host.Value == firstBoot.HostRef)
        {
            return;
        }
        if (snapshot.TryGet(target.Metrics, out HostMetricsRecord metrics) && !metrics.Live)
        {
            throw XenApiErrors.HostOffline(host.Value);
        }
        var session = context.RequiredSession.Value;
        await membership.HandOverAsync(target.Address, () =>
            Forwarder.ForwardAsync(snapshot, host, context.Message, [session, host.Value], CancellationToken.None)).ConfigureAwait(false);
        logger.LogWarning("Designated {Host} the new pool master", target.NameLabel);
        var reset = ApiSchema.MessagesByWireName[EmergencyResetMasterMessage];
        foreach (var member in snapshot.All<HostRecord>().Where(h => h.Ref != host && h.Ref.Value != firstBoot.HostRef))
        {
            try
            {
                await Forwarder.ForwardAsync(snapshot, member.Ref, reset, [session, target.Address], context.Cancellation).ConfigureAwait(false);
            }
            catch (XenApiException e)
            {
                // It finds the new master when it next starts (emergency_reset_master or recover_slaves reach it too).
                logger.LogWarning("Could not point {Host} at the new master: {Error}", member.NameLabel, e.Message);
            }
        }
    }
}
