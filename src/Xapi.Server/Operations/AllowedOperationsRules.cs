using System.Collections.Frozen;
using Xapi.Model;

namespace Xapi.Server.Operations;

/// <summary>How one class computes <c>allowed_operations</c> from an object's state and the operations in progress.</summary>
public interface IAllowedOperationsRule
{
    ClassMeta Class { get; }

    /// <param name="db">The transaction the recomputation runs in, for rules that look at related objects.</param>
    /// <param name="values">The object's values as they will be stored.</param>
    /// <param name="inProgress">The wire names of the operations in <c>current_operations</c>.</param>
    IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress);
}

/// <summary>
/// Rules that decide each operation with the real server's error and order of checks (VM, VBD,
/// VIF), instead of the default "blocked, else nothing else in progress". The operation stage
/// asks <see cref="Check"/> before an operation runs; <see cref="IAllowedOperationsRule.Allowed"/>
/// reads the operations in progress from the row's own <c>current_operations</c>.
/// </summary>
public interface IOperationRule : IAllowedOperationsRule
{
    /// <param name="values">The object's values, with <c>current_operations</c> as they stand.</param>
    /// <returns>The first error that refuses <paramref name="operation"/>, or null when it may run.</returns>
    XenApiException? Check(IRowReader db, string reference, IReadOnlyList<object?> values, string operation);
}

/// <summary>Until a class states its own rules: every operation when idle, none while one runs.</summary>
public sealed class IdleAllowsAll(ClassMeta cls) : IAllowedOperationsRule
{
    private readonly object?[] _all = cls.AllowedOperationsField!.Type.Element!.EnumMeta.Values.Select(v => (object?)v).ToArray();

    public ClassMeta Class => cls;

    public IReadOnlyList<object?> Allowed(IRowReader db, string reference, IReadOnlyList<object?> values, IReadOnlyCollection<string> inProgress) =>
        inProgress.Count > 0 ? ValueSet.Empty : _all;
}

/// <summary>The per-class rules, one place to look them up.</summary>
public sealed class AllowedOperationsRules
{
    private readonly FrozenDictionary<ClassMeta, IAllowedOperationsRule> _rules;

    public AllowedOperationsRules(IEnumerable<IAllowedOperationsRule> rules)
    {
        var byClass = rules.ToDictionary(r => r.Class);
        foreach (var cls in ApiSchema.Classes.Where(c => c.AllowedOperationsField is not null && !byClass.ContainsKey(c)))
        {
            byClass[cls] = new IdleAllowsAll(cls);
        }
        _rules = byClass.ToFrozenDictionary();
    }

    /// <summary>The rule of a class that has <c>allowed_operations</c>.</summary>
    public IAllowedOperationsRule For(ClassMeta cls) => _rules[cls];

    /// <summary>The rules this daemon applies.</summary>
    public static AllowedOperationsRules Default() => new([new VmAllowedOperations(), new VbdAllowedOperations(), new VifAllowedOperations(), new SrAllowedOperations(), new VdiAllowedOperations()]);
}
