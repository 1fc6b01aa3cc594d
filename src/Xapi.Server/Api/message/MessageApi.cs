using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>Alerts: named, prioritised notes about an object, shown by GUIs and kept in the database.</summary>
public sealed class MessageApi(TimeProvider time, Hosting.ServerOptions options) : IMessageApi<CallContext>
{
    // destroy_all's filters are named after the fields they match, plus a time window.
    private static readonly string ClsFilter = MessageRef.Class.Fields[MessageFields.Cls].Name;
    private static readonly string ObjUuidFilter = MessageRef.Class.Fields[MessageFields.ObjUuid].Name;
    private static readonly string NameFilter = MessageRef.Class.Fields[MessageFields.Name].Name;
    private static readonly string PriorityFilter = MessageRef.Class.Fields[MessageFields.Priority].Name;
    private const string BeforeFilter = "before";
    private const string AfterFilter = "after";

    public ValueTask<MessageRef> Create(CallContext context, string name, long priority, Cls cls, string objUuid, string body)
    {
        var target = ApiSchema.ClassesByNameIgnoreCase[cls.ToWire()];
        if (target.IsStored && !context.Snapshot.TryGetByUuid(target, objUuid, out _))
        {
            throw XenApiErrors.UuidInvalid(target.Name, objUuid);
        }
        var now = time.GetUtcNow().UtcDateTime;
        return ValueTask.FromResult(context.Write(tx =>
        {
            var created = tx.CreateMessage(message =>
            {
                message.Name = name;
                message.Priority = priority;
                message.Cls = cls;
                message.ObjUuid = objUuid;
                message.Timestamp = new DateTime(now.Ticks - now.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
                message.Body = body;
            });
            RemoveOldest(tx, created);
            return created;
        }));
    }

    /// <summary>
    /// Keeps alerts within their count (as real hosts' <c>messages-limit</c>) and their total
    /// text, removing the oldest first; the caller still gets success, as on real hosts, whose
    /// message GC removes the oldest beyond the limit.
    /// </summary>
    /// <remarks>
    /// The daemon itself raises an alert per VM power operation, and a busy host sits at the limit,
    /// so this must not read every alert each time. Alerts are kept in creation order in a queue, the
    /// count is the table's, and the text is an upper bound (deletes only lower it). Every
    /// <see cref="RecountEvery"/> alerts, and whenever the bound passes the limit, both are rebuilt
    /// from the table, in case rows came or went another way (a restore, a write that was rolled back).
    /// Runs inside the creating transaction, so one call at a time.
    /// </remarks>
    private void RemoveOldest(Transaction tx, MessageRef created)
    {
        _textBound += TextOf(tx.Get(MessageRef.Class, created.Value));
        _byAge.Enqueue(created.Value);
        if (_textBound > options.MessageTextLimit || ++_sinceRecount >= RecountEvery)
        {
            Recount(tx);
        }
        var count = tx.Count(MessageRef.Class);
        while ((count > options.MessageLimit || _textBound > options.MessageTextLimit) && _byAge.TryPeek(out var oldest) && oldest != created.Value)
        {
            _byAge.Dequeue();
            if (!tx.TryGet(MessageRef.Class, oldest, out var row))
            {
                continue;
            }
            tx.Delete(MessageRef.Class, row.Ref);
            count--;
            _textBound -= TextOf(row);
        }
    }

    private void Recount(Transaction tx)
    {
        _sinceRecount = 0;
        _byAge.Clear();
        _textBound = 0;
        foreach (var row in tx.All(MessageRef.Class).OrderBy(r => r.Created))
        {
            _byAge.Enqueue(row.Ref);
            _textBound += TextOf(row);
        }
    }

    private const int RecountEvery = 1000;
    private readonly Queue<string> _byAge = new();
    // Starts above any limit, so the first alert builds the queue from the table.
    private long _textBound = long.MaxValue / 2;
    private int _sinceRecount;

    private static readonly int NameField = MessageFields.Name;
    private static readonly int BodyField = MessageFields.Body;

    private static long TextOf(Row row) => ((string?)row.Values[NameField])?.Length + ((string?)row.Values[BodyField])?.Length ?? 0;

    public ValueTask<ValueMap> GetSince(CallContext context, DateTime since) =>
        ValueTask.FromResult(Records(context.Snapshot, m => m.Timestamp > since));

    public ValueTask<ValueMap> Get(CallContext context, Cls cls, string objUuid, DateTime since) =>
        ValueTask.FromResult(Records(context.Snapshot, m => m.Cls == cls && m.ObjUuid == objUuid && m.Timestamp > since));

    public ValueTask Destroy(CallContext context, MessageRef self)
    {
        context.Write(tx => tx.Delete(self));
        return ValueTask.CompletedTask;
    }

    public ValueTask DestroyMany(CallContext context, IReadOnlyList<MessageRef> messages)
    {
        context.Write(tx =>
        {
            foreach (var message in messages)
            {
                tx.Delete(message);
            }
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>Filters: <c>cls</c>, <c>obj_uuid</c>, <c>name</c>, <c>priority</c>, <c>before</c>, <c>after</c>.</summary>
    public ValueTask DestroyAll(CallContext context, ValueMap filters)
    {
        var predicates = filters.Select(filter => Filter((string)filter.Key, (string?)filter.Value ?? "")).ToList();
        context.Write(tx =>
        {
            foreach (var message in tx.All<MessageRecord>().Where(m => predicates.All(p => p(m))).Select(m => m.Ref).ToList())
            {
                tx.Delete(message);
            }
        });
        return ValueTask.CompletedTask;
    }

    private static Func<MessageRecord, bool> Filter(string key, string value)
    {
        if (key == ClsFilter)
        {
            return m => string.Equals(m.Cls.ToWire(), value, StringComparison.OrdinalIgnoreCase);
        }
        if (key == ObjUuidFilter)
        {
            return m => m.ObjUuid == value;
        }
        if (key == NameFilter)
        {
            return m => m.Name == value;
        }
        if (key == PriorityFilter)
        {
            return m => XType.ToDisplayString(m.Priority) == value;
        }
        if (key == BeforeFilter)
        {
            return DateTimeFormat.TryParse(value, out var before) ? m => m.Timestamp < before : _ => false;
        }
        if (key == AfterFilter)
        {
            return DateTimeFormat.TryParse(value, out var after) ? m => m.Timestamp > after : _ => false;
        }
        throw XenApiErrors.InvalidValue("filters", key);
    }

    private static ValueMap Records(DbSnapshot snapshot, Func<MessageRecord, bool> predicate) =>
        new(snapshot.All(MessageRef.Class)
            .Where(row => predicate(MessageRecord.Wrap(snapshot, row.Ref, row.Values)))
            .ToDictionary(row => (object)row.Ref, row => (object?)snapshot.ToRecord(row)));
}
