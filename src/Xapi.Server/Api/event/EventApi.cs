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
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Registration> _registrations = new(StringComparer.Ordinal);

    // Sessions change on every login; real servers do not report them as events either.
    private static readonly HashSet<ClassMeta> Unwatched = [SessionRef.Class, RoleRef.Class];

    private sealed record Subscription(ClassMeta Class, string? Ref);

    public async ValueTask<ValueMap> From(CallContext context, IReadOnlyList<string> classes, string token, double timeout)
    {
        var subscriptions = ParseSubscriptions(classes);
        var since = ParseToken(token);
        var deadline = time.GetUtcNow() + TimeSpan.FromSeconds(Math.Clamp(timeout, 0, 24 * 3600));
        var cancellation = context.Cancellation;
        while (true)
        {
            // Take the wake-up signal before the snapshot, so no commit falls between them.
            var nextCommit = hub.NextCommit;
            var snapshot = database.Snapshot;
            var events = Collect(snapshot, subscriptions, since);
            var remaining = deadline - time.GetUtcNow();
            if (events.Count > 0 || since < 0 || remaining <= TimeSpan.Zero)
            {
                return Batch(snapshot, subscriptions, events);
            }
            await Task.WhenAny(nextCommit, Task.Delay(remaining, time, cancellation)).ConfigureAwait(false);
            cancellation.ThrowIfCancellationRequested();
            sessions.Validate(context.RequiredSession.Value);
        }
    }

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
        var registration = _registrations.GetOrAdd(context.RequiredSession.Value, _ => new Registration { Position = database.Snapshot.Generation });
        lock (registration)
        {
            registration.Subscriptions.UnionWith(subscriptions);
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
            }
        }
        return ValueTask.CompletedTask;
    }

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
            var nextCommit = hub.NextCommit;
            var snapshot = database.Snapshot;
            List<Subscription> subscriptions;
            long position;
            lock (registration)
            {
                subscriptions = [.. registration.Subscriptions];
                position = registration.Position;
            }
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
            await nextCommit.WaitAsync(cancellation).ConfigureAwait(false);
            sessions.Validate(context.RequiredSession.Value);
        }
    }

    public ValueTask<long> GetCurrentId(CallContext context) => ValueTask.FromResult(database.Snapshot.Generation);

    private static List<Subscription> ParseSubscriptions(IReadOnlyList<string> classes)
    {
        var result = new List<Subscription>();
        foreach (var text in classes)
        {
            if (text == "*")
            {
                result.AddRange(ApiSchema.Classes.Where(c => c.IsStored && !Unwatched.Contains(c)).Select(c => new Subscription(c, null)));
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
        return result;
    }

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
            if (since < 0)
            {
                continue;
            }
            foreach (var tombstone in snapshot.Tombstones)
            {
                if (tombstone.Class == cls && tombstone.Deleted > since && tombstone.Created <= since && (all || refs.Contains(tombstone.Ref)))
                {
                    events.Add((tombstone.Deleted, Event(tombstone.Deleted, cls, DelOperation, tombstone.Ref, tombstone.Uuid, null, idAsString)));
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
