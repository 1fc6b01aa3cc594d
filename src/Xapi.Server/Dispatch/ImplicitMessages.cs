using System.Collections.Frozen;
using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Dispatch;

/// <summary>
/// A class's own completion of an implicit <c>create</c> (<c>network.create</c> picks a
/// bridge): it sees the new row's values inside the creating transaction and may refuse.
/// </summary>
public interface ICreateRule
{
    ClassMeta Class { get; }

    void Complete(CallContext call, Transaction tx, object?[] values);
}

/// <summary>
/// The implicit messages every class has, driven by the datamodel: record and field getters,
/// setters, map and set edits, lookups, <c>create</c> and <c>destroy</c>.
/// </summary>
public sealed class ImplicitMessages(IEnumerable<ICreateRule> createRules)
{
    private readonly FrozenDictionary<ClassMeta, ICreateRule> _createRules = createRules.ToFrozenDictionary(r => r.Class);

    public object? Invoke(MessageMeta message, object?[] args, CallContext context)
    {
        var database = context.Database;
        var cls = message.Owner;
        switch (message.Implicit)
        {
            case ImplicitKind.GetRecord:
            {
                var snapshot = database.Snapshot;
                return snapshot.ToRecord(snapshot.Get(cls, (string)args[0]!));
            }
            case ImplicitKind.GetByUuid:
                return database.Snapshot.GetByUuid(cls, (string)args[0]!).Ref;
            case ImplicitKind.GetByNameLabel:
            {
                var label = (string)args[0]!;
                var field = cls.NameLabelField!;
                return database.Snapshot.All(cls).Where(r => (string?)r[field] == label).Select(r => (object?)r.Ref).ToArray();
            }
            case ImplicitKind.GetAll:
                return database.Snapshot.All(cls).Select(r => (object?)r.Ref).ToArray();
            case ImplicitKind.GetAllRecords:
            {
                var snapshot = database.Snapshot;
                return RecordsMap(snapshot, snapshot.All(cls));
            }
            case ImplicitKind.GetAllRecordsWhere:
            {
                var snapshot = database.Snapshot;
                var expression = WhereExpression.Parse((string)args[0]!);
                return RecordsMap(snapshot, snapshot.All(cls).Where(r => expression.Matches(snapshot, r)));
            }
            case ImplicitKind.GetAllWhere:
            {
                var snapshot = database.Snapshot;
                var expression = WhereExpression.Parse((string)args[0]!);
                return snapshot.All(cls).Where(r => expression.Matches(snapshot, r)).Select(r => (object?)r.Ref).ToArray();
            }
            case ImplicitKind.Get:
            {
                var snapshot = database.Snapshot;
                return snapshot.GetField(snapshot.Get(cls, (string)args[0]!), message.ImplicitField!);
            }
            case ImplicitKind.Set:
            {
                var field = message.ImplicitField!;
                database.Write(tx => tx.Update(cls, (string)args[0]!, values =>
                {
                    values[field.Ordinal] = args[1];
                    tx.CheckReferences(field, values);
                }));
                return null;
            }
            case ImplicitKind.AddTo:
                AddToMap(database, cls, message.ImplicitField!, (string)args[0]!, args[1]!, args[2]);
                return null;
            case ImplicitKind.RemoveFrom:
            {
                var field = message.ImplicitField!;
                database.Write(tx => tx.Update(cls, (string)args[0]!, values => values[field.Ordinal] = ((ValueMap)values[field.Ordinal]!).Without(args[1]!)));
                return null;
            }
            case ImplicitKind.Add:
            {
                var field = message.ImplicitField!;
                database.Write(tx => tx.Update(cls, (string)args[0]!, values =>
                {
                    tx.CheckReferences(field, field.Type.Element!, args[1]);
                    var set = (IReadOnlyList<object?>)values[field.Ordinal]!;
                    if (!set.Contains(args[1]))
                    {
                        values[field.Ordinal] = set.Append(args[1]).ToArray();
                    }
                }));
                return null;
            }
            case ImplicitKind.Remove:
            {
                var field = message.ImplicitField!;
                database.Write(tx => tx.Update(cls, (string)args[0]!, values =>
                    values[field.Ordinal] = ((IReadOnlyList<object?>)values[field.Ordinal]!).Where(v => !Equals(v, args[1])).ToArray()));
                return null;
            }
            case ImplicitKind.Create:
                return Create(context, cls, (ValueMap)args[0]!);
            case ImplicitKind.Destroy:
                // The operation stage has registered "destroy" where the class tracks it.
                database.Write(tx => tx.Delete(cls, (string)args[0]!));
                return null;
            default:
                throw new InvalidOperationException($"{message.WireName} is not an implicit message");
        }
    }

    private static void CheckRequired(ClassMeta cls, ValueMap record)
    {
        var missing = cls.RequiredForCreate.FirstOrDefault(f => !record.ContainsKey(f.Name));
        if (missing is not null)
        {
            throw XenApiErrors.FieldTypeError(missing.Name);
        }
    }

    /// <summary>The row an implicit create would store from a record: its constructor fields over the defaults.</summary>
    public static object?[] ConstructorValues(ClassMeta cls, ValueMap record)
    {
        CheckRequired(cls, record);
        var values = new object?[cls.Fields.Count];
        foreach (var field in cls.Fields)
        {
            values[field.Ordinal] = field.IsConstructorArgument && field.ManyOf is null && field != cls.UuidField && record.TryGetValue(field.Name, out var value)
                ? value
                : field.DefaultValue;
        }
        return values;
    }

    private static ValueMap RecordsMap(DbSnapshot snapshot, IEnumerable<Row> rows)
    {
        var items = new Dictionary<object, object?>();
        foreach (var row in rows)
        {
            items[row.Ref] = snapshot.ToRecord(row);
        }
        return new ValueMap(items);
    }

    private static void AddToMap(XapiDatabase database, ClassMeta cls, FieldMeta field, string reference, object key, object? value) =>
        database.Write(tx => tx.Update(cls, reference, values =>
        {
            var map = (ValueMap)values[field.Ordinal]!;
            if (map.ContainsKey(key))
            {
                var uuid = cls.UuidField is { } u ? (string)values[u.Ordinal]! : reference;
                throw XenApiErrors.MapDuplicateKey(cls.Name, field.Name, uuid, XType.ToDisplayString(key));
            }
            tx.CheckReferences(field, field.Type.Key!, key);
            tx.CheckReferences(field, field.Type.Element!, value);
            values[field.Ordinal] = map.With(key, value);
        }));

    /// <summary>
    /// Implicit create: constructor and writable fields come from the record; those without a
    /// datamodel default are mandatory. Runtime-only fields keep their defaults. Missing fields
    /// are reported before references, as the real server unmarshals the record first.
    /// </summary>
    private string Create(CallContext context, ClassMeta cls, ValueMap record)
    {
        CheckRequired(cls, record);
        var rule = _createRules.GetValueOrDefault(cls);
        return context.Write(tx => tx.CreateRow(cls, values =>
        {
            foreach (var field in cls.Fields)
            {
                if (field.IsConstructorArgument && field.ManyOf is null && field != cls.UuidField && record.TryGetValue(field.Name, out var value))
                {
                    values[field.Ordinal] = value;
                }
            }
            // Once every given field is in place: whether a reference may be NULL can depend on
            // another field of the row (an empty CD drive has no VDI).
            foreach (var field in cls.Fields)
            {
                if (field.References is not null && field.IsConstructorArgument && field.ManyOf is null && record.ContainsKey(field.Name))
                {
                    tx.CheckReferences(field, values);
                }
            }
            rule?.Complete(context, tx, values);
        }));
    }
}
