using Xapi.Model;

namespace Xapi.Server.Messages;

public sealed class SessionMessages(SessionManager sessions) : ISessionMessages
{
    public async ValueTask<object?> LoginWithPassword(CallContext callContext, string uname, string pwd, string version, string originator) =>
        await sessions.LoginAsync(uname, pwd, originator, ((ServerCallContext)callContext).CancellationToken).ConfigureAwait(false);

    public ValueTask<object?> Logout(CallContext callContext)
    {
        sessions.Logout(callContext.SessionRef!);
        return ValueTask.FromResult<object?>(null);
    }

    public ValueTask<object?> LocalLogout(CallContext callContext) => Logout(callContext);

    public async ValueTask<object?> ChangePassword(CallContext callContext, string old_pwd, string new_pwd)
    {
        var context = (ServerCallContext)callContext;
        var row = context.Database.Snapshot.Get(ApiSchema.Class("session"), context.SessionRef!);
        var record = new SessionRecord(row.Values);
        if (!record.IsLocalSuperuser || record.AuthUserName != SessionManager.RootUser)
        {
            throw new XenApiException(ErrorCodes.UserIsNotLocalSuperuser, "Only the local superuser can change the root password");
        }
        if (!await Task.Run(() => sessions.VerifyPassword(old_pwd)).ConfigureAwait(false))
        {
            throw new XenApiException(ErrorCodes.ChangePasswordRejected, "Authentication information cannot be recovered");
        }
        if (string.IsNullOrEmpty(new_pwd))
        {
            throw new XenApiException(ErrorCodes.ChangePasswordRejected, "The new password must not be empty");
        }
        await Task.Run(() => sessions.ChangePassword(new_pwd)).ConfigureAwait(false);
        return null;
    }
}
