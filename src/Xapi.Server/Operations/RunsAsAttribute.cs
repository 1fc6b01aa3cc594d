namespace Xapi.Server.Operations;

/// <summary>
/// Declares, on a message's implementation, the operation it runs as and on which parameter's
/// object: <c>[RunsAs&lt;VmOperations&gt;(VmOperations.Start)]</c> on <c>VM.start</c>. The
/// dispatcher's operation stage then checks <c>blocked_operations</c> and operations in
/// progress, and registers this one in <c>current_operations</c> while the call runs.
/// </summary>
/// <typeparam name="TOperation">The class's operations enum (<c>VmOperations</c>, <c>VdiOperations</c>, …).</typeparam>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public sealed class RunsAsAttribute<TOperation>(TOperation operation) : Attribute, IRunsAs
    where TOperation : struct, Enum
{
    public TOperation Operation { get; } = operation;

    /// <summary>The parameter naming the object; by default the first reference to the message's own class.</summary>
    public string? On { get; init; }

    Enum IRunsAs.Operation => Operation;
}

/// <summary>What the operation stage reads from <see cref="RunsAsAttribute{TOperation}"/>, whatever its enum.</summary>
public interface IRunsAs
{
    Enum Operation { get; }

    string? On { get; }
}
