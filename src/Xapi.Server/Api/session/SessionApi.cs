using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Pool;
using Xapi.Server.Sessions;

namespace Xapi.Server.Api;

public sealed class SessionApi(SessionManager sessions, PoolMembership membership) : ISessionApi<CallContext>
{
    private const string PoolCredentialsInvalid = "Pool credentials invalid";

    /// <summary>
    /// A root process on the local socket is let in without a password, as on real hosts
    /// (local tools, <c>xe</c> in dom0); everyone else proves the password. A pool member sends
    /// everyone else to its master before it looks at the credentials, as real members do.
    /// </summary>
    public async ValueTask<SessionRef> LoginWithPassword(CallContext context, string uname, string pwd, string version, string originator)
    {
        if (context.FromLocalRoot)
        {
            return new(sessions.CreateSession(uname, originator, RoleSet.PoolAdmin, isLocalSuperuser: true));
        }
        if (membership.MasterAddress is { } master)
        {
            throw XenApiErrors.HostIsSlave(master);
        }
        return new(await sessions.LoginAsync(uname, pwd, originator, context.RemoteAddress, context.Cancellation).ConfigureAwait(false));
    }

    /// <summary>An administrator's login to this host itself, member or not, that needs no master (emergencies).</summary>
    public async ValueTask<SessionRef> SlaveLocalLoginWithPassword(CallContext context, string uname, string pwd) =>
        new(await sessions.LocalLoginAsync(uname, pwd, context.RemoteAddress, context.Cancellation).ConfigureAwait(false));

    /// <summary>A pool member logs in to its master with the pool secret: a pool session, named after the member's host.</summary>
    public ValueTask<SessionRef> SlaveLogin(CallContext context, HostRef host, string psecret)
    {
        if (membership.MasterAddress is { } master)
        {
            throw XenApiErrors.HostIsSlave(master);
        }
        if (!membership.Secret.Matches(psecret))
        {
            throw XenApiErrors.SessionAuthenticationFailed(host.Value, PoolCredentialsInvalid);
        }
        return ValueTask.FromResult(new SessionRef(sessions.CreateSession(host.Value, "", RoleSet.PoolAdmin, isLocalSuperuser: true, isPoolSession: true)));
    }

    public ValueTask Logout(CallContext context)
    {
        sessions.Logout(context.RequiredSession.Value);
        return ValueTask.CompletedTask;
    }

    public ValueTask LocalLogout(CallContext context) => Logout(context);

    public async ValueTask ChangePassword(CallContext context, string oldPwd, string newPwd)
    {
        var session = context.Snapshot.Get(context.RequiredSession);
        if (!session.IsLocalSuperuser || session.AuthUserName != SessionManager.RootUser)
        {
            throw XenApiErrors.UserIsNotLocalSuperuser("Only the local superuser can change the root password");
        }
        if (!await sessions.VerifyPasswordAsync(oldPwd, context.Cancellation).ConfigureAwait(false))
        {
            throw XenApiErrors.ChangePasswordRejected("Authentication information cannot be recovered");
        }
        if (string.IsNullOrEmpty(newPwd))
        {
            throw XenApiErrors.ChangePasswordRejected("The new password must not be empty");
        }
        await Task.Run(() => sessions.ChangePassword(newPwd)).ConfigureAwait(false);
    }
}
