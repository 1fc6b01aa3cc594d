using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Messages;

/// <summary>Alerts: named, prioritised notes about an object, shown by GUIs and kept in the database.</summary>
public sealed class MessageMessages(XapiDatabase database, TimeProvider time) : IMessageMessages
{
    private static readonly ClassMeta MessageClass = ApiSchema.Class("message");
    private static readonly FieldMeta Timestamp = MessageClass.FieldsByName["timestamp"];
    private static readonly FieldMeta Cls = MessageClass.FieldsByName["cls"];
    private static readonly FieldMeta ObjUuid = MessageClass.FieldsByName["obj_uuid"];
    private static readonly FieldMeta Priority = MessageClass.FieldsByName["priority"];
    private static readonly FieldMeta Name = MessageClass.FieldsByName["name"];

    public ValueTask<object?> Create(CallContext callContext, string name, long priority, Cls cls, string obj_uuid, string body)
    {
        var target = ApiSchema.ClassesByNameIgnoreCase[cls.ToWire()];
        if (target.IsStored && !database.Snapshot.TryGetByUuid(target, obj_uuid, out _))
        {
            throw XenApiException.UuidInvalid(target.Name, obj_uuid);
        }
        var now = time.GetUtcNow().UtcDateTime;
        var row = database.Write(tx => tx.Create(MessageClass, new Dictionary<string, object?>
        {
            ["name"] = name,
            ["priority"] = priority,
            ["cls"] = cls.ToWire(),
            ["obj_uuid"] = obj_uuid,
            ["timestamp"] = new DateTime(now.Ticks - now.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc),
            ["body"] = body,
        }));
        return ValueTask.FromResult<object?>(row.Ref);
    }

    public ValueTask<object?> GetSince(CallContext callContext, DateTime since) =>
        ValueTask.FromResult<object?>(Records(r => (DateTime)r[Timestamp]! > since));

    public ValueTask<object?> Get(CallContext callContext, Cls cls, string obj_uuid, DateTime since) =>
        ValueTask.FromResult<object?>(Records(r =>
            (string?)r[Cls] == cls.ToWire() && (string?)r[ObjUuid] == obj_uuid && (DateTime)r[Timestamp]! > since));

    public ValueTask<object?> Destroy(CallContext callContext, MessageRef self)
    {
        database.Write(tx => tx.Delete(MessageClass, self.Value));
        return ValueTask.FromResult<object?>(null);
    }

    public ValueTask<object?> DestroyMany(CallContext callContext, IReadOnlyList<object?> messages)
    {
        database.Write(tx =>
        {
            foreach (var reference in messages.Cast<string>())
            {
                tx.Delete(MessageClass, reference);
            }
        });
        return ValueTask.FromResult<object?>(null);
    }

    /// <summary>Filters: <c>cls</c>, <c>obj_uuid</c>, <c>name</c>, <c>priority</c>, <c>before</c>, <c>after</c>.</summary>
    public ValueTask<object?> DestroyAll(CallContext callContext, ValueMap filters)
    {
        bool Matches(Row row) => filters.All(filter => (string)filter.Key switch
        {
            "cls" => string.Equals((string?)row[Cls], (string?)filter.Value, StringComparison.OrdinalIgnoreCase),
            "obj_uuid" => (string?)row[ObjUuid] == (string?)filter.Value,
            "name" => (string?)row[Name] == (string?)filter.Value,
            "priority" => XType.ToDisplayString(row[Priority]) == (string?)filter.Value,
            "before" => DateTimeFormat.TryParse((string)filter.Value!, out var before) && (DateTime)row[Timestamp]! < before,
            "after" => DateTimeFormat.TryParse((string)filter.Value!, out var after) && (DateTime)row[Timestamp]! > after,
            var other => throw new XenApiException(ErrorCodes.InvalidValue, "filters", other),
        });
        database.Write(tx =>
        {
            foreach (var row in tx.All(MessageClass).Where(Matches).ToList())
            {
                tx.Delete(MessageClass, row.Ref);
            }
        });
        return ValueTask.FromResult<object?>(null);
    }

    private ValueMap Records(Func<Row, bool> predicate)
    {
        var snapshot = database.Snapshot;
        return new ValueMap(snapshot.All(MessageClass).Where(predicate).ToDictionary(r => (object)r.Ref, r => (object?)snapshot.ToRecord(r)));
    }
}
