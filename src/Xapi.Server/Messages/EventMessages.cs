using System.Globalization;
using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Messages;

/// <summary>
/// <c>event.from</c> over the database's generations: an <c>add</c> per object for the empty
/// token, otherwise <c>add</c>/<c>mod</c>/<c>del</c> since the token, waiting for a commit when
/// there is nothing yet.
/// </summary>
public sealed class EventMessages(XapiDatabase database, EventHub hub, SessionManager sessions, TimeProvider time, ServerOptions options)
    : IEventMessages
{
    // event.register state per session: what it watches and how far it has read.
    private sealed class Registration
    {
        public HashSet<Subscription> Subscriptions { get; } = [];

        public long Position { get; set; }
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Registration> _registrations = new(StringComparer.Ordinal);

    // Sessions change on every login; real servers do not report them as events either.
    private static readonly HashSet<string> Unwatched = ["session"];

    private sealed record Subscription(ClassMeta Class, string? Ref);

    public async ValueTask<object?> From(CallContext callContext, IReadOnlyList<object?> classes, string token, double timeout)
    {
        var subscriptions = ParseSubscriptions(classes);
        var since = ParseToken(token);
        var deadline = time.GetUtcNow() + TimeSpan.FromSeconds(Math.Clamp(timeout, 0, 24 * 3600));
        var cancellation = ((ServerCallContext)callContext).CancellationToken;
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
            sessions.Validate(callContext.SessionRef);
        }
    }

    public ValueTask<object?> Inject(CallContext callContext, string @class, string @ref)
    {
        if (!ApiSchema.ClassesByNameIgnoreCase.TryGetValue(@class, out var cls) || !cls.IsStored)
        {
            throw new XenApiException("EVENT_SUBSCRIPTION_PARSE_FAILURE", @class);
        }
        var generation = database.Write(tx =>
        {
            tx.Touch(cls, @ref);
            return tx.Generation;
        });
        return ValueTask.FromResult<object?>(Token(generation));
    }

    public ValueTask<object?> Register(CallContext callContext, IReadOnlyList<object?> classes)
    {
        var subscriptions = ParseSubscriptions(classes);
        var registration = _registrations.GetOrAdd(callContext.SessionRef!, _ => new Registration { Position = database.Snapshot.Generation });
        lock (registration)
        {
            registration.Subscriptions.UnionWith(subscriptions);
        }
        return ValueTask.FromResult<object?>(null);
    }

    public ValueTask<object?> Unregister(CallContext callContext, IReadOnlyList<object?> classes)
    {
        var subscriptions = ParseSubscriptions(classes);
        if (_registrations.TryGetValue(callContext.SessionRef!, out var registration))
        {
            lock (registration)
            {
                registration.Subscriptions.ExceptWith(subscriptions);
            }
        }
        return ValueTask.FromResult<object?>(null);
    }

    /// <summary>
    /// The legacy interface: blocks until something registered for changes, then returns those
    /// events. A client that falls further behind than the queue limit gets EVENTS_LOST and
    /// starts again from now.
    /// </summary>
    public async ValueTask<object?> Next(CallContext callContext)
    {
        if (!_registrations.TryGetValue(callContext.SessionRef!, out var registration))
        {
            throw new XenApiException("SESSION_NOT_REGISTERED", callContext.SessionRef!);
        }
        var cancellation = ((ServerCallContext)callContext).CancellationToken;
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
                throw new XenApiException("EVENTS_LOST");
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
            sessions.Validate(callContext.SessionRef);
        }
    }

    public ValueTask<object?> GetCurrentId(CallContext callContext) =>
        ValueTask.FromResult<object?>(database.Snapshot.Generation);

    private static List<Subscription> ParseSubscriptions(IReadOnlyList<object?> classes)
    {
        var result = new List<Subscription>();
        foreach (var item in classes)
        {
            var text = item as string ?? "";
            if (text == "*")
            {
                result.AddRange(ApiSchema.Classes.Where(c => c.IsStored && !Unwatched.Contains(c.Name)).Select(c => new Subscription(c, null)));
                continue;
            }
            var slash = text.IndexOf('/');
            var name = slash < 0 ? text : text[..slash];
            if (!ApiSchema.ClassesByNameIgnoreCase.TryGetValue(name, out var cls) || !cls.IsStored)
            {
                throw new XenApiException("EVENT_SUBSCRIPTION_PARSE_FAILURE", text);
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
        throw new XenApiException("EVENT_FROM_TOKEN_PARSE_FAILURE", token);
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
                    var operation = since < 0 || row.Created > since ? "add" : "mod";
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
                    events.Add((tombstone.Deleted, Event(tombstone.Deleted, cls, "del", tombstone.Ref, tombstone.Uuid, null, idAsString)));
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
            ["id"] = idAsString ? generation.ToString(CultureInfo.InvariantCulture) : generation,
            ["timestamp"] = Timestamp(),
            ["class"] = cls.EventName,
            ["operation"] = operation,
            ["ref"] = reference,
            ["obj_uuid"] = uuid,
        };
        if (snapshot is not null)
        {
            items["snapshot"] = snapshot;
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
            ["events"] = events,
            ["valid_ref_counts"] = new ValueMap(counts),
            ["token"] = Token(snapshot.Generation),
        });
    }
}
