using Microsoft.Extensions.Logging;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Changing masters when the master is gone, by hand, as on real pools without HA: a member is
/// made master with the copy it holds (<c>emergency_transition_to_master</c>, after an
/// administrator's <c>session.slave_local_login_with_password</c> on it), and the others are
/// pointed at it (<c>recover_slaves</c> from the new master, or <c>emergency_reset_master</c> on
/// each). A member's copy has every write the master acknowledged to it or through it.
/// </summary>
public sealed partial class PoolApi
{
    public async ValueTask EmergencyTransitionToMaster(CallContext context)
    {
        if (!membership.IsMember)
        {
            return;
        }
        await membership.BecomeMasterAsync().ConfigureAwait(false);
        var me = new HostRef(firstBoot.HostRef);
        context.Write(tx =>
        {
            tx.Update(tx.All<PoolRecord>().Single().Ref, p => p.Master = me);
            if (tx.TryGet(tx.Get(me).Metrics, out HostMetricsRecord metrics))
            {
                tx.Update(metrics.Ref, m => m.Live = true);
            }
        });
        logger.LogWarning("Emergency transition: this host is the pool master");
    }

    public async ValueTask EmergencyResetMaster(CallContext context, string masterAddress)
    {
        if (context.Snapshot.TryGet(new HostRef(firstBoot.HostRef), out HostRecord me) && me.Address == masterAddress)
        {
            throw XenApiErrors.HostItsOwnSlave();
        }
        await membership.FollowNewMasterAsync(masterAddress).ConfigureAwait(false);
        logger.LogWarning("Emergency reset: following the pool master at {Master}", masterAddress);
    }

    /// <summary>Points every member that answers at this master; the hosts that now follow it.</summary>
    public async ValueTask<IReadOnlyList<HostRef>> RecoverSlaves(CallContext context)
    {
        var snapshot = context.Snapshot;
        var myAddress = snapshot.Get(new HostRef(firstBoot.HostRef)).Address;
        var reset = ApiSchema.MessagesByWireName[EmergencyResetMasterMessage];
        var recovered = new List<HostRef>();
        foreach (var host in snapshot.All<HostRecord>().Where(h => h.Ref.Value != firstBoot.HostRef))
        {
            try
            {
                await Forwarder.ForwardAsync(snapshot, host.Ref, reset, [context.RequiredSession.Value, myAddress], context.Cancellation).ConfigureAwait(false);
                recovered.Add(host.Ref);
            }
            catch (XenApiException e)
            {
                logger.LogWarning("Could not point {Host} at this master: {Error}", host.NameLabel, e.Message);
            }
        }
        return recovered;
    }

    private const string EmergencyResetMasterMessage = "pool.emergency_reset_master";
}
