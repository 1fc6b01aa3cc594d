using System.Collections.Concurrent;
using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server;

/// <summary>
/// The operation framework every lifecycle operation runs under: an operation on an object is
/// registered as <c>task → op</c> in <c>current_operations</c> with <c>allowed_operations</c>
/// recomputed, in one transaction, before it runs; removed and recomputed when it ends.
/// Conflicting operations answer OTHER_OPERATION_IN_PROGRESS, blocked ones OPERATION_BLOCKED.
/// </summary>
public sealed class OperationGuard(XapiDatabase database)
{
    /// <summary>Computes an object's allowed operations from its row and the operations in progress.</summary>
    public delegate IReadOnlyList<object?> AllowedOperationsPolicy(Row row, IReadOnlyCollection<string> inProgress);

    private readonly ConcurrentDictionary<ClassMeta, AllowedOperationsPolicy> _policies = new();

    public void SetPolicy(ClassMeta cls, AllowedOperationsPolicy policy) => _policies[cls] = policy;

    /// <summary>Whether <paramref name="cls"/> tracks operations and knows <paramref name="operation"/>.</summary>
    public static bool Tracks(ClassMeta cls, string operation) =>
        cls.FieldsByName.TryGetValue("current_operations", out var current)
        && current.Type.Element is { Kind: XTypeKind.Enum } element
        && element.EnumMeta.TryCanonical(operation, out _);

    public Scope Begin(ClassMeta cls, string reference, string operation, string operationRef)
    {
        var current = cls.FieldsByName["current_operations"];
        database.Write(tx =>
        {
            var row = tx.Get(cls, reference);
            if (cls.FieldsByName.TryGetValue("blocked_operations", out var blocked)
                && ((ValueMap)row[blocked]!).TryGetValue(operation, out var reason))
            {
                throw new XenApiException("OPERATION_BLOCKED", reference, (string?)reason ?? "");
            }
            var running = (ValueMap)row[current]!;
            foreach (var (task, op) in running)
            {
                throw new XenApiException("OTHER_OPERATION_IN_PROGRESS", cls.Name, reference, (string)op!, (string)task);
            }
            Recompute(tx, cls, reference, running.With(operationRef, operation));
        });
        return new Scope(this, cls, reference, operationRef);
    }

    private void End(ClassMeta cls, string reference, string operationRef)
    {
        var current = cls.FieldsByName["current_operations"];
        database.Write(tx =>
        {
            if (tx.TryGet(cls, reference, out var row))
            {
                Recompute(tx, cls, reference, ((ValueMap)row[current]!).Without(operationRef));
            }
        });
    }

    private void Recompute(Transaction tx, ClassMeta cls, string reference, ValueMap running)
    {
        var current = cls.FieldsByName["current_operations"];
        var allowedField = cls.FieldsByName.GetValueOrDefault("allowed_operations");
        tx.Update(cls, reference, values =>
        {
            values[current.Ordinal] = running;
            if (allowedField is not null)
            {
                var row = tx.Get(cls, reference);
                var inProgress = running.Values.Select(v => (string)v!).ToList();
                values[allowedField.Ordinal] = _policies.TryGetValue(cls, out var policy)
                    ? policy(row, inProgress)
                    : DefaultAllowed(allowedField, inProgress);
            }
        });
    }

    // Until a class states its own rules: everything when idle, nothing while busy.
    private static IReadOnlyList<object?> DefaultAllowed(FieldMeta allowed, IReadOnlyCollection<string> inProgress) =>
        inProgress.Count > 0 ? ValueSet.Empty : allowed.Type.Element!.EnumMeta.Values.Select(v => (object?)v).ToArray();

    public readonly struct Scope(OperationGuard guard, ClassMeta cls, string reference, string operationRef) : IDisposable
    {
        public void Dispose() => guard.End(cls, reference, operationRef);
    }
}
