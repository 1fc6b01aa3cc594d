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
    private readonly Dictionary<string, HashSet<LiveSession>> _groups = new(StringComparer.Ordinal);

    private readonly LoginThrottle _throttle;

    public SessionManager(XapiDatabase database, PasswordStore passwords, ServerOptions options, ILogger<SessionManager> logger, TimeProvider time)
    {
        _database = database;
        _passwords = passwords;
        _options = options;
        _logger = logger;
        _time = time;
        _throttle = new LoginThrottle(options.MaxConcurrentPasswordChecks);
        _failureLog = new LogRateLimit(options.UnauthenticatedLogLinesPerMinute, TimeSpan.FromMinutes(1));
    }

    private readonly LogRateLimit _failureLog;

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
                if (_failureLog.TryEnter(out var suppressed))
                {
                    _logger.LogWarning("Failed login for {User} from {Source} ({Originator}); {Suppressed} earlier failures not logged",
                        user, source, originator, suppressed);
                }
                // Delay without holding a thread, so other clients are served meanwhile; the
                // source's next attempt waits for it.
                await Task.Delay(_options.FailedLoginDelay, _time, cancellationToken).ConfigureAwait(false);
                throw XenApiErrors.SessionAuthenticationFailed(user, "Authentication failure");
            }
        }
        var reference = CreateSession(user, originator, RoleSet.PoolAdmin, isLocalSuperuser: true);
        _logger.LogInformation("Session {Session} created for {User} from {Source} ({Originator})", TrackingId(reference), user, source, originator);
        return reference;
    }

    /// <summary>
    /// Opens a session. The local superuser may call everything and, as on real hosts, its
    /// <c>rbac_permissions</c> stay empty; other users hold their roles' names and permissions.
    /// </summary>
    public string CreateSession(string user, string originator, RoleSet roles, bool isLocalSuperuser, bool isPoolSession = false)
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
            session.Pool = isPoolSession;
        }));
        var (group, limit) = GroupOf(user, originator);
        var live = new LiveSession(reference.Value, user, isLocalSuperuser, permissions.ToFrozenSet(StringComparer.Ordinal), now.Ticks) { Group = group };
        _live[reference.Value] = live;
        foreach (var oldest in JoinGroup(live, limit))
        {
            _logger.LogInformation("Session {Session} destroyed: more than {Limit} sessions in group {Group}", TrackingId(oldest.Ref), limit, group);
            Logout(oldest.Ref, quiet: true);
        }
        return reference.Value;
    }

    /// <summary>
    /// The group a session counts in, and the group's limit, as real hosts group them: sessions
    /// of root (or of no user name) by originator, those without an originator together, and
    /// every other user's by user name.
    /// </summary>
    private (string Group, int Limit) GroupOf(string user, string originator)
    {
        var asRoot = user.Length == 0 || user == RootUser;
        return asRoot && originator.Length == 0 ? ("external", _options.MaxSessionsWithoutOriginator)
            : asRoot ? ("originator:" + originator, _options.MaxSessionsPerOriginator)
            : ("username:" + user, _options.MaxSessionsPerOriginator);
    }

    // Adds a session to its group and picks the sessions to destroy when the group is over its
    // limit: the least recently active, skipping those with work in progress, never the new one.
    private List<LiveSession> JoinGroup(LiveSession session, int limit)
    {
        lock (_groups)
        {
            if (!_groups.TryGetValue(session.Group, out var members))
            {
                _groups[session.Group] = members = [];
            }
            members.Add(session);
            if (members.Count <= limit)
            {
                return [];
            }
            return members
                .Where(m => m != session && !IsBusy(m.Ref))
                .OrderBy(m => Interlocked.Read(ref m.LastActiveTicks))
                .Take(members.Count - limit)
                .ToList();
        }
    }

    private void LeaveGroup(LiveSession session)
    {
        lock (_groups)
        {
            if (_groups.TryGetValue(session.Group, out var members) && members.Remove(session) && members.Count == 0)
            {
                _groups.Remove(session.Group);
            }
        }
    }

    /// <summary>Whether a session has work in progress (a pending task): such a session is not destroyed to make room.</summary>
    public Func<string, bool> IsBusy { get; set; } = static _ => false;

    /// <summary>Raised with a session's ref when it ends (logout, idle expiry, or destroyed to make room).</summary>
    public event Action<string>? SessionEnded;

    /// <summary>
    /// What logs show instead of a session ref, which is a credential: a digest that links the
    /// lines of one session and cannot be turned back into the ref (real hosts do the same).
    /// </summary>
    public static string TrackingId(string reference) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(reference)).AsSpan(0, 8));

    /// <summary>The pool master's address when this host is a member; null on the master.</summary>
    public Func<string?> MasterAddress { get; set; } = static () => null;

    /// <summary>
    /// Checks a call's session; SESSION_INVALID when it is unknown, logged out or expired. On a
    /// member, a session of the pool (made at the master) is HOST_IS_SLAVE, as on real members:
    /// the client belongs at the master.
    /// </summary>
    public LiveSession Validate(object? sessionArgument)
    {
        if (sessionArgument is string reference && _live.TryGetValue(reference, out var session))
        {
            Interlocked.Exchange(ref session.LastActiveTicks, _time.GetUtcNow().UtcTicks);
            return session;
        }
        if (sessionArgument is string pooled && MasterAddress() is { } master && _database.Snapshot.Exists(new SessionRef(pooled)))
        {
            throw XenApiErrors.HostIsSlave(master);
        }
        throw XenApiErrors.SessionInvalid(sessionArgument as string ?? XType.ToDisplayString(sessionArgument));
    }

    /// <summary>
    /// A session on this host alone, kept in memory, not in the pool's database: what a pool
    /// member gives an administrator who logs in to it directly (<c>session.slave_local_login_with_password</c>),
    /// which must work when its master is gone.
    /// </summary>
    public async ValueTask<string> LocalLoginAsync(string user, string password, System.Net.IPAddress? source, CancellationToken cancellationToken)
    {
        using (await _throttle.EnterSourceAsync(source, cancellationToken).ConfigureAwait(false))
        {
            if (user != RootUser || !await VerifyPasswordAsync(password, cancellationToken).ConfigureAwait(false))
            {
                await Task.Delay(_options.FailedLoginDelay, _time, cancellationToken).ConfigureAwait(false);
                throw XenApiErrors.SessionAuthenticationFailed(user, "Authentication failure");
            }
        }
        var reference = XapiDatabase.NewRef();
        _live[reference] = new LiveSession(reference, user, isLocalSuperuser: true, FrozenSet<string>.Empty, _time.GetUtcNow().UtcTicks) { LocalOnly = true };
        _logger.LogInformation("Local session {Session} created for {User} from {Source}", TrackingId(reference), user, source);
        return reference;
    }

    /// <summary>
    /// The session of a call the pool's master forwarded: the master checked it, and its row may
    /// not have reached this member's copy yet, so it is taken as the pool's superuser.
    /// </summary>
    public LiveSession Forwarded(object? sessionArgument) =>
        sessionArgument is string reference && _live.TryGetValue(reference, out var session)
            ? session
            : new LiveSession(sessionArgument as string ?? "", RootUser, isLocalSuperuser: true, FrozenSet<string>.Empty, _time.GetUtcNow().UtcTicks);

    public void Logout(string reference) => Logout(reference, quiet: false);

    private void Logout(string reference, bool quiet)
    {
        if (_live.TryRemove(reference, out var live))
        {
            if (live.LocalOnly)
            {
                return;
            }
            LeaveGroup(live);
            var session = new SessionRef(reference);
            _database.Write(tx =>
            {
                if (tx.Exists(session))
                {
                    tx.Delete(session);
                }
            });
            SessionEnded?.Invoke(reference);
            if (!quiet)
            {
                _logger.LogInformation("Session {Session} logged out", TrackingId(reference));
            }
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
            _logger.LogInformation("Session {Session} expired after {Timeout} idle", TrackingId(session.Ref), _options.SessionIdleTimeout);
            Logout(session.Ref, quiet: true);
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

    /// <summary>The group the session counts in for the per-user limit (see <see cref="SessionManager"/>).</summary>
    public string Group { get; init; } = "";

    /// <summary>Held by this host alone, with no row in the pool's database (a member's emergency login).</summary>
    public bool LocalOnly { get; init; }

    public bool May(string permission) => IsLocalSuperuser || Permissions.Contains(permission);
}
