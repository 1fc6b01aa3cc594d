using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Hosting;
using Xapi.Server.Dispatch;
using Xapi.Server.Events;
using Xapi.Server.Sessions;

namespace Xapi.Server.Api;

/// <summary>
/// <c>event.from</c> over the database's generations: an <c>add</c> per object for the empty
/// token, otherwise <c>add</c>/<c>mod</c>/<c>del</c> since the token, waiting for a commit when
/// there is nothing yet.
/// </summary>
public sealed class EventApi(XapiDatabase database, EventHub hub, SessionManager sessions, TimeProvider time, ServerOptions options)
    : IEventApi<CallContext>
{
    // An event record's fields, by the names the datamodel gives them.
    private static readonly string IdField = EventField(EventFields.Id);
    private static readonly string TimestampField = EventField(EventFields.Timestamp);
    private static readonly string ClassField = EventField(EventFields.Class);
    private static readonly string OperationField = EventField(EventFields.Operation);
    private static readonly string RefField = EventField(EventFields.Ref);
    private static readonly string ObjUuidField = EventField(EventFields.ObjUuid);
    private static readonly string SnapshotField = EventField(EventFields.Snapshot);

    // The members of event.from's batch.
    private const string EventsMember = "events";
    private const string ValidRefCountsMember = "valid_ref_counts";
    private const string TokenMember = "token";

    private static readonly string AddOperation = EventOperation.Add.ToWire();
    private static readonly string ModOperation = EventOperation.Mod.ToWire();
    private static readonly string DelOperation = EventOperation.Del.ToWire();

    private static string EventField(int ordinal) => EventRef.Class.Fields[ordinal].Name;

    // event.register state per session: what it watches and how far it has read.
    private sealed class Registration
    {
        public HashSet<Subscription> Subscriptions { get; } = [];

        public long Position { get; set; }

        // The event.next call blocked on these subscriptions, if any.
        public EventHub.Waiter? Blocked { get; set; }
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Registration> _registrations = new(StringComparer.Ordinal);

    // Sessions change on every login; real servers do not report them as events either.
    private static readonly HashSet<ClassMeta> Unwatched = [SessionRef.Class, RoleRef.Class];

    private sealed record Subscription(ClassMeta Class, string? Ref);

    /// <summary>The longest event.from waits: the real server's default, which it also uses for a timeout it cannot read.</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromHours(24);

    public async ValueTask<ValueMap> From(CallContext context, IReadOnlyList<string> classes, string token, double timeout)
    {
        var subscriptions = ParseSubscriptions(classes);
        var since = ParseToken(token);
        var wait = WaitFor(timeout);
        var session = context.RequiredSession.Value;
        var cancellation = context.Cancellation;
        // Most calls of a busy client find events waiting: they need no waiter and no timer.
        var first = database.Snapshot;
        var found = Collect(first, subscriptions, since);
        if (found.Count > 0 || since < 0 || wait <= TimeSpan.Zero)
        {
            return Batch(first, subscriptions, found);
        }
        // One waiter and one timer for the whole call, however many commits wake it.
        using var waiter = hub.Watch(subscriptions.Select(s => s.Class), session);
        using var expiry = new CancellationTokenSource(wait, time);
        using var onExpiry = expiry.Token.UnsafeRegister(static w => ((EventHub.Waiter)w!).Wake(), waiter);
        using var onCancel = cancellation.UnsafeRegister(static w => ((EventHub.Waiter)w!).Wake(), waiter);
        while (true)
        {
            // Arm before the snapshot, so no commit falls between them.
            var woken = waiter.Arm();
            var snapshot = database.Snapshot;
            var events = Collect(snapshot, subscriptions, since);
            if (events.Count > 0 || expiry.IsCancellationRequested)
            {
                return Batch(snapshot, subscriptions, events);
            }
            await woken.ConfigureAwait(false);
            cancellation.ThrowIfCancellationRequested();
            sessions.Validate(session);
        }
    }

    // The real server reads the timeout as a time span and waits its 24-hour default when it
    // cannot: NaN, an infinity, a negative number or one too large. Longer waits are cut to 24 hours.
    internal static TimeSpan WaitFor(double timeout) =>
        double.IsFinite(timeout) && timeout >= 0 && timeout < MaxTimeout.TotalSeconds ? TimeSpan.FromSeconds(timeout) : MaxTimeout;

    public ValueTask<string> Inject(CallContext context, string @class, string @ref)
    {
        if (!ApiSchema.ClassesByNameIgnoreCase.TryGetValue(@class, out var cls) || !cls.IsStored)
        {
            throw XenApiErrors.EventSubscriptionParseFailure(@class);
        }
        var generation = database.Write(tx =>
        {
            tx.Touch(cls, @ref);
            return tx.Generation;
        });
        return ValueTask.FromResult(Token(generation));
    }

    public ValueTask Register(CallContext context, IReadOnlyList<string> classes)
    {
        var subscriptions = ParseSubscriptions(classes);
        var session = context.RequiredSession.Value;
        var registration = _registrations.GetOrAdd(session, _ => NewRegistration());
        lock (registration)
        {
            registration.Subscriptions.UnionWith(subscriptions);
            // A blocked event.next now watches more: let it look again.
            registration.Blocked?.Wake();
        }
        return ValueTask.CompletedTask;
    }

    public ValueTask Unregister(CallContext context, IReadOnlyList<string> classes)
    {
        var subscriptions = ParseSubscriptions(classes);
        if (_registrations.TryGetValue(context.RequiredSession.Value, out var registration))
        {
            lock (registration)
            {
                registration.Subscriptions.ExceptWith(subscriptions);
                registration.Blocked?.Wake();
            }
        }
        return ValueTask.CompletedTask;
    }

    // Registrations of sessions that have ended are dropped now and then, so that sessions which
    // register and never log out cannot pile them up: amortised, the check costs O(1) per registration.
    private Registration NewRegistration()
    {
        if (_registrations.Count >= Volatile.Read(ref _pruneAt))
        {
            var snapshot = database.Snapshot;
            foreach (var session in _registrations.Keys)
            {
                if (!snapshot.Exists(SessionRef.Class, session))
                {
                    _registrations.TryRemove(session, out _);
                }
            }
            Volatile.Write(ref _pruneAt, Math.Max(PruneFloor, _registrations.Count * 2));
        }
        return new Registration { Position = database.Snapshot.Generation };
    }

    private const int PruneFloor = 1024;
    private int _pruneAt = PruneFloor;

    /// <summary>
    /// The legacy interface: blocks until something registered for changes, then returns those
    /// events. A client that falls further behind than the queue limit gets EVENTS_LOST and
    /// starts again from now.
    /// </summary>
    public async ValueTask<IReadOnlyList<object?>> Next(CallContext context)
    {
        var session = context.RequiredSession.Value;
        if (!_registrations.TryGetValue(session, out var registration))
        {
            throw XenApiErrors.SessionNotRegistered(session);
        }
        var cancellation = context.Cancellation;
        while (true)
        {
            List<Subscription> subscriptions;
            long position;
            EventHub.Waiter waiter;
            lock (registration)
            {
                subscriptions = [.. registration.Subscriptions];
                position = registration.Position;
                // Watched from before the snapshot, so no commit falls between them.
                waiter = hub.Watch(subscriptions.Select(s => s.Class), session);
                registration.Blocked = waiter;
            }
            try
            {
                var woken = waiter.Arm();
                var snapshot = database.Snapshot;
                var events = Collect(snapshot, subscriptions, position, idAsString: false);
                if (events.Count > options.EventQueueLimit)
                {
                    lock (registration)
                    {
                        registration.Position = snapshot.Generation;
                    }
                    throw XenApiErrors.EventsLost();
                }
                if (events.Count > 0)
                {
                    lock (registration)
                    {
                        registration.Position = Math.Max(registration.Position, snapshot.Generation);
                    }
                    return events;
                }
                using (cancellation.UnsafeRegister(static w => ((EventHub.Waiter)w!).Wake(), waiter))
                {
                    await woken.ConfigureAwait(false);
                }
                cancellation.ThrowIfCancellationRequested();
            }
            finally
            {
                lock (registration)
                {
                    if (registration.Blocked == waiter)
                    {
                        registration.Blocked = null;
                    }
                }
                waiter.Dispose();
            }
            try
            {
                sessions.Validate(session);
            }
            catch (XenApiException)
            {
                _registrations.TryRemove(session, out _);
                throw;
            }
        }
    }

    public ValueTask<long> GetCurrentId(CallContext context) => ValueTask.FromResult(database.Snapshot.Generation);

    // Each distinct subscription once, however often the client repeats it: a body of
    // ["*", "*", ...] must not cost the number of classes times the number of entries.
    private static List<Subscription> ParseSubscriptions(IReadOnlyList<string> classes)
    {
        var result = new HashSet<Subscription>();
        var everything = false;
        foreach (var text in classes)
        {
            if (text == "*")
            {
                if (!everything)
                {
                    everything = true;
                    result.UnionWith(Everything);
                }
                continue;
            }
            var slash = text.IndexOf('/');
            var name = slash < 0 ? text : text[..slash];
            if (!ApiSchema.ClassesByNameIgnoreCase.TryGetValue(name, out var cls) || !cls.IsStored)
            {
                throw XenApiErrors.EventSubscriptionParseFailure(text);
            }
            result.Add(new Subscription(cls, slash < 0 ? null : text[(slash + 1)..]));
        }
        return [.. result];
    }

    private static readonly Subscription[] Everything =
        [.. ApiSchema.Classes.Where(c => c.IsStored && !Unwatched.Contains(c)).Select(c => new Subscription(c, null))];

    // Returns -1 for the empty token (send everything as "add").
    private static long ParseToken(string token)
    {
        if (token.Length == 0)
        {
            return -1;
        }
        var comma = token.IndexOf(',');
        var first = comma < 0 ? token : token[..comma];
        if (long.TryParse(first, NumberStyles.None, CultureInfo.InvariantCulture, out var generation))
        {
            return generation;
        }
        throw XenApiErrors.EventFromTokenParseFailure(token);
    }

    public static string Token(long generation) =>
        string.Create(CultureInfo.InvariantCulture, $"{generation:D20},{0:D20}");

    private static List<object?> Collect(DbSnapshot snapshot, IEnumerable<Subscription> subscriptions, long since, bool idAsString = true)
    {
        var events = new List<(long Generation, object? Event)>();
        Dictionary<ClassMeta, (bool All, HashSet<string> Refs)>? deletable = null;
        var byClass = subscriptions.GroupBy(s => s.Class);
        foreach (var group in byClass)
        {
            var cls = group.Key;
            if (since >= 0 && !snapshot.ChangedSince(cls, since))
            {
                continue;
            }
            var all = group.Any(s => s.Ref is null);
            var refs = group.Where(s => s.Ref is not null).Select(s => s.Ref!).ToHashSet(StringComparer.Ordinal);
            var rows = since < 0 ? snapshot.All(cls) : snapshot.ModifiedSince(cls, since);
            foreach (var row in rows)
            {
                if (all || refs.Contains(row.Ref))
                {
                    var operation = since < 0 || row.Created > since ? AddOperation : ModOperation;
                    events.Add((row.Modified, Event(row.Modified, cls, operation, row.Ref, row.Uuid, snapshot.ToRecord(row), idAsString)));
                }
            }
            if (since >= 0)
            {
                (deletable ??= [])[cls] = (all, refs);
            }
        }
        if (deletable is not null)
        {
            // One pass over the remembered deletes for every class, rather than one per class.
            foreach (var tombstone in snapshot.Tombstones)
            {
                if (tombstone.Deleted > since && tombstone.Created <= since && deletable.TryGetValue(tombstone.Class, out var watch)
                    && (watch.All || watch.Refs.Contains(tombstone.Ref)))
                {
                    events.Add((tombstone.Deleted, Event(tombstone.Deleted, tombstone.Class, DelOperation, tombstone.Ref, tombstone.Uuid, null, idAsString)));
                }
            }
        }
        return events.OrderBy(e => e.Generation).Select(e => e.Event).ToList();
    }

    // event.from's records carry the id as a string, event.next's as an int, as real servers do.
    private static ValueMap Event(long generation, ClassMeta cls, string operation, string reference, string uuid, RecordValue? snapshot, bool idAsString)
    {
        var items = new Dictionary<object, object?>(7)
        {
            [IdField] = idAsString ? generation.ToString(CultureInfo.InvariantCulture) : generation,
            [TimestampField] = Timestamp(),
            [ClassField] = cls.EventName,
            [OperationField] = operation,
            [RefField] = reference,
            [ObjUuidField] = uuid,
        };
        if (snapshot is not null)
        {
            items[SnapshotField] = snapshot;
        }
        return new ValueMap(items);
    }

    // Formatting the time was a third of building an event, and a dump's events share a millisecond.
    [ThreadStatic]
    private static (long Milliseconds, string Text)? t_timestamp;

    private static string Timestamp()
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (t_timestamp is not { } last || last.Milliseconds != now)
        {
            last = (now, (now / 1000.0).ToString("F6", CultureInfo.InvariantCulture));
            t_timestamp = last;
        }
        return last.Text;
    }

    private static ValueMap Batch(DbSnapshot snapshot, List<Subscription> subscriptions, List<object?> events)
    {
        var counts = new Dictionary<object, object?>();
        foreach (var cls in subscriptions.Select(s => s.Class).Distinct())
        {
            // valid_ref_counts are <i4> on the wire, hence int rather than long.
            counts[cls.EventName] = snapshot.Count(cls);
        }
        return new ValueMap(new Dictionary<object, object?>
        {
            [EventsMember] = events,
            [ValidRefCountsMember] = new ValueMap(counts),
            [TokenMember] = Token(snapshot.Generation),
        });
    }
}
