using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// Joining a pool, run on the joining host. It logs in to the master with the credentials given,
/// takes the pool secret, reads the pool's whole database and checks this host against it
/// (<see cref="JoinChecks"/>), has the master commit this host's objects in one transaction
/// (<see cref="JoinContribution"/>), and then follows the master's database as a member. Real
/// hosts restart their toolstack to become members; this one changes over in place, so the call
/// returns once the host is a member.
/// </summary>
public sealed partial class PoolApi
{
    private const string InitialAuthMessage = "pool.initial_auth";

    public ValueTask Join(CallContext context, string masterAddress, string masterUsername, string masterPassword) =>
        JoinAsync(context, masterAddress, masterUsername, masterPassword, force: false);

    public ValueTask JoinForce(CallContext context, string masterAddress, string masterUsername, string masterPassword) =>
        JoinAsync(context, masterAddress, masterUsername, masterPassword, force: true);

    /// <summary>The pool secret, for a host that logged in with the master's credentials to join.</summary>
    public ValueTask<string> InitialAuth(CallContext context) => ValueTask.FromResult(membership.Secret.Value);

    private async ValueTask JoinAsync(CallContext context, string masterAddress, string masterUsername, string masterPassword, bool force)
    {
        var secret = await TakePoolSecretAsync(masterAddress, masterUsername, masterPassword, context.Cancellation).ConfigureAwait(false);
        var link = membership.LinkTo(masterAddress, secret);
        try
        {
            var pool = new XapiDatabase();
            pool.ApplyFromMaster(await AtMasterAsync(() => link.ChangesAsync("", 0, TimeSpan.Zero, context.Cancellation)).ConfigureAwait(false));
            var mine = context.Snapshot;
            JoinChecks.Assert(mine, new HostRef(firstBoot.HostRef), pool.Snapshot, force);
            var contribution = JoinContribution.Of(mine, pool.Snapshot);
            var reply = await AtMasterAsync(() => Task.Run(() => link.Commit(contribution, "", 0))).ConfigureAwait(false);
            if (!reply.Committed)
            {
                throw XenApiErrors.InternalError("the pool master refused this host's objects: the pool changed while they were sent");
            }
            logger.LogInformation("The pool master {Master} took {Rows} objects of this host", masterAddress, contribution.Count);
            membership.BecomeMember(masterAddress, secret, link, reply.Delta);
        }
        catch
        {
            link.Dispose();
            throw;
        }
    }

    private async Task<string> TakePoolSecretAsync(string masterAddress, string user, string password, CancellationToken cancellation)
    {
        using var master = new XenApiClient(membership.MasterUri(masterAddress));
        await AtMasterAsync(() => master.LoginAsync(user, password, cancellation)).ConfigureAwait(false);
        try
        {
            return (string)(await AtMasterAsync(() => master.CallAsync(InitialAuthMessage, [master.Session], cancellation)).ConfigureAwait(false))!;
        }
        finally
        {
            try
            {
                await master.LogoutAsync(cancellation).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or XenApiException or RpcFormatException)
            {
                logger.LogDebug("Logging out of the pool master {Master} failed: {Reason}", masterAddress, e.Message);
            }
        }
    }

    // The master's own errors (a wrong password, HOST_IS_SLAVE) reach the caller as they are; a
    // master that cannot be reached, or answers with something that is not the XenAPI, is named.
    private static async Task<T> AtMasterAsync<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (HttpRequestException e) when (e.StatusCode is null)
        {
            throw XenApiErrors.JoiningHostConnectionFailed();
        }
        catch (Exception e) when (e is HttpRequestException or RpcFormatException or FormatException or TaskCanceledException)
        {
            throw XenApiErrors.JoiningHostServiceFailed();
        }
    }
}
