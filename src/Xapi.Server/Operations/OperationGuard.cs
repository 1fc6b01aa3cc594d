using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>
/// The operation framework every lifecycle operation runs under: an operation on an object is
/// registered as <c>task → op</c> in <c>current_operations</c> with <c>allowed_operations</c>
/// recomputed, in one transaction, before it runs; removed and recomputed when it ends.
/// Conflicting operations answer OTHER_OPERATION_IN_PROGRESS, blocked ones OPERATION_BLOCKED.
/// </summary>
public sealed class OperationGuard(XapiDatabase database, AllowedOperationsRules rules)
{
    /// <summary>Whether <paramref name="cls"/> tracks operations and knows <paramref name="operation"/>.</summary>
    public static bool Tracks(ClassMeta cls, string operation) =>
        cls.OperationsEnum is { } operations && operations.TryCanonical(operation, out _);

    /// <summary>Registers the operation; it is durable, and seen by every reader, before this returns.</summary>
    public async ValueTask<Scope> BeginAsync(ClassMeta cls, string reference, string operation, string operationRef, CancellationToken cancellationToken)
    {
        var scope = Begin(cls, reference, operation, operationRef, out var generation);
        await database.WhenVisibleAsync(generation, cancellationToken).ConfigureAwait(false);
        return scope;
    }

    public Scope Begin(ClassMeta cls, string reference, string operation, string operationRef) => Begin(cls, reference, operation, operationRef, out _);

    private Scope Begin(ClassMeta cls, string reference, string operation, string operationRef, out long generation)
    {
        var current = cls.CurrentOperationsField!;
        generation = database.Write(tx =>
        {
            var row = tx.Get(cls, reference);
            var running = (ValueMap)row[current]!;
            if (rules.For(cls) is IOperationRule rule)
            {
                if (rule.Check(tx, reference, tx.GetRowValues(cls, reference), operation) is { } refused)
                {
                    throw refused;
                }
                Recompute(tx, cls, reference, running.With(operationRef, operation));
                return tx.Generation;
            }
            if (cls.BlockedOperationsField is { } blocked && ((ValueMap)row[blocked]!).TryGetValue(operation, out var reason))
            {
                throw XenApiErrors.OperationBlocked(reference, (string?)reason ?? "");
            }
            foreach (var (task, op) in running)
            {
                throw XenApiErrors.OtherOperationInProgress(cls.Name, reference, (string)op!, (string)task);
            }
            Recompute(tx, cls, reference, running.With(operationRef, operation));
            return tx.Generation;
        });
        return new Scope(this, cls, reference, operationRef);
    }

    /// <summary>
    /// Forgets the operations a previous run left registered: a crash ended them all (real hosts
    /// do not persist these fields), and a left-over entry would block its object for good
    /// (OTHER_OPERATION_IN_PROGRESS) and keep the storage collector off a VDI. Runs at start-up,
    /// before anything is served; returns how many objects it freed.
    /// </summary>
    public int ForgetInterrupted() => database.Write(tx =>
    {
        var freed = 0;
        foreach (var cls in ApiSchema.Classes.Where(c => c.CurrentOperationsField is not null))
        {
            var stale = tx.All(cls).Where(r => ((ValueMap)r[cls.CurrentOperationsField!]!).Count > 0).Select(r => r.Ref).ToList();
            foreach (var reference in stale)
            {
                Recompute(tx, cls, reference, ValueMap.Empty);
            }
            freed += stale.Count;
        }
        return freed;
    });

    /// <summary>
    /// Recomputes the stored <c>allowed_operations</c> of every object whose class states its
    /// own rules, as real hosts do when they start: rows written by first boot, by an older
    /// version or behind the API's back then list what the rules allow. Writes only rows that
    /// change; returns how many.
    /// </summary>
    public int RefreshAllowed() => database.Write(tx =>
    {
        var changed = 0;
        foreach (var cls in ApiSchema.Classes.Where(c => c.AllowedOperationsField is not null && rules.For(c) is IOperationRule))
        {
            var allowedField = cls.AllowedOperationsField!;
            foreach (var (reference, values) in tx.AllRowValues(cls).ToList())
            {
                var allowed = rules.For(cls).Allowed(tx, reference, values, []);
                if (!allowed.SequenceEqual((IEnumerable<object?>)values[allowedField.Ordinal]!))
                {
                    tx.UpdateRow(cls, reference, v => v[allowedField.Ordinal] = allowed);
                    changed++;
                }
            }
        }
        return changed;
    });

    private void End(ClassMeta cls, string reference, string operationRef)
    {
        var current = cls.CurrentOperationsField!;
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
        var current = cls.CurrentOperationsField!;
        var allowedField = cls.AllowedOperationsField;
        tx.Update(cls, reference, values =>
        {
            values[current.Ordinal] = running;
            if (allowedField is not null)
            {
                var inProgress = running.Values.Select(v => (string)v!).ToList();
                values[allowedField.Ordinal] = rules.For(cls).Allowed(tx, reference, values, inProgress);
            }
        });
    }

    public readonly struct Scope(OperationGuard guard, ClassMeta cls, string reference, string operationRef) : IDisposable
    {
        public void Dispose() => guard.End(cls, reference, operationRef);
    }
}
