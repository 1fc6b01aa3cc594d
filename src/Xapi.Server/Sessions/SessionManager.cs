using System.Collections.Concurrent;
using System.Collections.Frozen;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Hosting;

namespace Xapi.Server.Sessions;

/// <summary>
/// Logs users in and out and validates the session of every call. Sessions are rows of the
/// <c>session</c> class; their activity time is tracked in memory so that a read-only call
/// never costs a database write.
/// </summary>
public sealed class SessionManager
{
    public const string RootUser = "root";

    private readonly XapiDatabase _database;
    private readonly PasswordStore _passwords;
    private readonly ServerOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, LiveSession> _live = new(StringComparer.Ordinal);

    private readonly LoginThrottle _throttle;

    public SessionManager(XapiDatabase database, PasswordStore passwords, ServerOptions options, ILogger<SessionManager> logger, TimeProvider time)
    {
        _database = database;
        _passwords = passwords;
        _options = options;
        _logger = logger;
        _time = time;
        _throttle = new LoginThrottle(options.MaxConcurrentPasswordChecks);
    }

    public LoginThrottle Throttle => _throttle;

    public HostRef ThisHost { get; set; } = HostRef.Null;

    /// <param name="source">The client's address: its attempts are taken one at a time, failure delays included.</param>
    public async ValueTask<string> LoginAsync(string user, string password, string originator, System.Net.IPAddress? source = null,
        CancellationToken cancellationToken = default)
    {
        using (await _throttle.EnterSourceAsync(source, cancellationToken).ConfigureAwait(false))
        {
            var valid = user == RootUser && await VerifyPasswordAsync(password, cancellationToken).ConfigureAwait(false);
            if (!valid)
            {
                _logger.LogWarning("Failed login for {User} from {Source} ({Originator})", user, source, originator);
                // Delay without holding a thread, so other clients are served meanwhile; the
                // source's next attempt waits for it.
                await Task.Delay(_options.FailedLoginDelay, _time, cancellationToken).ConfigureAwait(false);
                throw XenApiErrors.SessionAuthenticationFailed(user, "Authentication failure");
            }
        }
        var reference = CreateSession(user, originator, RoleSet.PoolAdmin, isLocalSuperuser: true);
        _logger.LogInformation("Session {Session} created for {User} ({Originator})", reference, user, originator);
        return reference;
    }

    /// <summary>
    /// Opens a session. The local superuser may call everything and, as on real hosts, its
    /// <c>rbac_permissions</c> stay empty; other users hold their roles' names and permissions.
    /// </summary>
    public string CreateSession(string user, string originator, RoleSet roles, bool isLocalSuperuser)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var permissions = isLocalSuperuser ? [] : Rbac.PermissionNamesOf(roles);
        var reference = _database.Write(tx => tx.CreateSession(session =>
        {
            session.ThisHost = ThisHost;
            session.LastActive = now;
            session.IsLocalSuperuser = isLocalSuperuser;
            session.ValidationTime = now;
            session.AuthUserName = user;
            session.RbacPermissions = permissions;
            session.Originator = originator;
        }));
        _live[reference.Value] = new LiveSession(reference.Value, user, isLocalSuperuser, permissions.ToFrozenSet(StringComparer.Ordinal), now.Ticks);
        return reference.Value;
    }

    /// <summary>Checks a call's session; SESSION_INVALID when it is unknown, logged out or expired.</summary>
    public LiveSession Validate(object? sessionArgument)
    {
        if (sessionArgument is string reference && _live.TryGetValue(reference, out var session))
        {
            Interlocked.Exchange(ref session.LastActiveTicks, _time.GetUtcNow().UtcTicks);
            return session;
        }
        throw XenApiErrors.SessionInvalid(sessionArgument as string ?? XType.ToDisplayString(sessionArgument));
    }

    public void Logout(string reference)
    {
        if (_live.TryRemove(reference, out _))
        {
            var session = new SessionRef(reference);
            _database.Write(tx =>
            {
                if (tx.Exists(session))
                {
                    tx.Delete(session);
                }
            });
            _logger.LogInformation("Session {Session} logged out", reference);
        }
    }

    /// <summary>Checks the root password when a check slot is free (checks are deliberately slow).</summary>
    public ValueTask<bool> VerifyPasswordAsync(string password, CancellationToken cancellationToken = default) =>
        _throttle.CheckAsync(() => _passwords.Verify(password), cancellationToken);

    public void ChangePassword(string newPassword) => _passwords.Change(newPassword);

    /// <summary>Ends idle sessions and writes the activity times of live ones back to their rows.</summary>
    public int ExpireIdle()
    {
        var now = _time.GetUtcNow().UtcTicks;
        var expired = _live.Values.Where(s => now - Interlocked.Read(ref s.LastActiveTicks) > _options.SessionIdleTimeout.Ticks).ToList();
        foreach (var session in expired)
        {
            _logger.LogInformation("Session {Session} expired after {Timeout} idle", session.Ref, _options.SessionIdleTimeout);
            Logout(session.Ref);
        }
        _database.Write(tx =>
        {
            foreach (var session in _live.Values)
            {
                var lastActive = DateTimeTrim(new DateTime(Interlocked.Read(ref session.LastActiveTicks), DateTimeKind.Utc));
                var reference = new SessionRef(session.Ref);
                if (tx.TryGet(reference, out var row) && row.LastActive != lastActive)
                {
                    tx.Update(reference, values => values.LastActive = lastActive);
                }
            }
        });
        return expired.Count;
    }

    private static DateTime DateTimeTrim(DateTime value) => new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}

/// <summary>A logged-in session as the dispatcher checks it on every call, without a database read.</summary>
public sealed class LiveSession(string reference, string userName, bool isLocalSuperuser, FrozenSet<string> permissions, long lastActiveTicks)
{
    public string Ref { get; } = reference;

    public string UserName { get; } = userName;

    /// <summary>The local superuser passes every permission check, as on real hosts.</summary>
    public bool IsLocalSuperuser { get; } = isLocalSuperuser;

    /// <summary>Lower-case permission names (and role names) the session holds.</summary>
    public FrozenSet<string> Permissions { get; } = permissions;

    public long LastActiveTicks = lastActiveTicks;

    public bool May(string permission) => IsLocalSuperuser || Permissions.Contains(permission);
}
