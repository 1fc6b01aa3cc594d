using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server;

/// <summary>
/// Logs users in and out and validates the session of every call. Sessions are rows of the
/// <c>session</c> class; their activity time is tracked in memory so that a read-only call
/// never costs a database write.
/// </summary>
public sealed class SessionManager
{
    public const string RootUser = "root";

    private static readonly ClassMeta SessionClass = ApiSchema.Class("session");
    private static readonly FieldMeta LastActive = SessionClass.FieldsByName["last_active"];

    /// <summary>The permission names a pool-admin holds: every message, lower-cased.</summary>
    public static readonly IReadOnlyList<object?> AllPermissions =
        ApiSchema.Classes.SelectMany(c => c.Messages).Select(m => (object?)m.WireName.ToLowerInvariant()).ToArray();

    private readonly XapiDatabase _database;
    private readonly PasswordStore _passwords;
    private readonly ServerOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, LiveSession> _live = new(StringComparer.Ordinal);

    public SessionManager(XapiDatabase database, PasswordStore passwords, ServerOptions options, ILogger<SessionManager> logger, TimeProvider time)
    {
        _database = database;
        _passwords = passwords;
        _options = options;
        _logger = logger;
        _time = time;
    }

    public string HostRef { get; set; } = XType.NullRef;

    public sealed class LiveSession(string reference, RoleSet roles, long lastActiveTicks)
    {
        public string Ref { get; } = reference;

        public RoleSet Roles { get; } = roles;

        public long LastActiveTicks = lastActiveTicks;
    }

    public async ValueTask<string> LoginAsync(string user, string password, string originator, CancellationToken cancellationToken = default)
    {
        // PBKDF2 is deliberately slow: keep it off the request thread pool's hot path.
        var valid = user == RootUser && await Task.Run(() => _passwords.Verify(password), cancellationToken).ConfigureAwait(false);
        if (!valid)
        {
            _logger.LogWarning("Failed login for {User} from {Originator}", user, originator);
            // Delay without holding a thread, so other clients are served meanwhile.
            await Task.Delay(_options.FailedLoginDelay, _time, cancellationToken).ConfigureAwait(false);
            throw new XenApiException(ErrorCodes.SessionAuthenticationFailed, user, "Authentication failure");
        }
        var reference = CreateSession(user, originator, RoleSet.PoolAdmin, isLocalSuperuser: true);
        _logger.LogInformation("Session {Session} created for {User} ({Originator})", reference, user, originator);
        return reference;
    }

    public string CreateSession(string user, string originator, RoleSet roles, bool isLocalSuperuser)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var row = _database.Write(tx => tx.Create(SessionClass, new Dictionary<string, object?>
        {
            ["this_host"] = HostRef,
            ["this_user"] = XType.NullRef,
            ["last_active"] = now,
            ["pool"] = false,
            ["is_local_superuser"] = isLocalSuperuser,
            ["subject"] = XType.NullRef,
            ["validation_time"] = now,
            ["auth_user_sid"] = "",
            ["auth_user_name"] = user,
            ["rbac_permissions"] = roles.HasFlag(RoleSet.PoolAdmin) ? AllPermissions : ValueSet.Empty,
            ["parent"] = XType.NullRef,
            ["originator"] = originator,
        }));
        _live[row.Ref] = new LiveSession(row.Ref, roles, now.Ticks);
        return row.Ref;
    }

    /// <summary>Checks a call's session; SESSION_INVALID when it is unknown, logged out or expired.</summary>
    public LiveSession Validate(object? sessionArgument)
    {
        if (sessionArgument is string reference && _live.TryGetValue(reference, out var session))
        {
            Interlocked.Exchange(ref session.LastActiveTicks, _time.GetUtcNow().UtcTicks);
            return session;
        }
        throw new XenApiException(ErrorCodes.SessionInvalid, sessionArgument as string ?? XType.ToDisplayString(sessionArgument));
    }

    public void Logout(string reference)
    {
        if (_live.TryRemove(reference, out _))
        {
            _database.Write(tx =>
            {
                if (tx.TryGet(SessionClass, reference, out _))
                {
                    tx.Delete(SessionClass, reference);
                }
            });
            _logger.LogInformation("Session {Session} logged out", reference);
        }
    }

    public bool VerifyPassword(string password) => _passwords.Verify(password);

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
                var lastActive = new DateTime(Interlocked.Read(ref session.LastActiveTicks), DateTimeKind.Utc);
                if (tx.TryGet(SessionClass, session.Ref, out var row) && !Equals(row[LastActive], DateTimeTrim(lastActive)))
                {
                    tx.Set(SessionClass, session.Ref, LastActive, DateTimeTrim(lastActive));
                }
            }
        });
        return expired.Count;
    }

    private static DateTime DateTimeTrim(DateTime value) => new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
