using System.Reflection;
using Xapi.Model;
using Xapi.Server.Operations;

namespace Xapi.Server.Dispatch;

/// <summary>
/// Reads what the handlers implement. A handler implements its class's generated contract
/// (<c>IVMApi&lt;CallContext&gt;</c>); a message it leaves to the contract's default answers
/// NOT_IMPLEMENTED. A public method that implements no contract member is a mistake (a
/// misspelt name, a wrong parameter list) and stops the daemon from starting.
/// </summary>
public static class HandlerContract
{
    /// <summary>How one custom message is served.</summary>
    public sealed record Binding(MessageMeta Message, bool Implemented, OperationDeclaration? RunsAs, PlacementDeclaration? RunsOn = null);

    /// <summary>A message's operation: which class, which argument names the object, which operation.</summary>
    public sealed record OperationDeclaration(ClassMeta Class, int ArgumentIndex, string Operation);

    /// <summary>Where in a pool a message runs, and which argument names its object or host.</summary>
    public sealed record PlacementDeclaration(HostSelection Selection, int ArgumentIndex, ClassMeta Class);

    public static IReadOnlyList<Binding> Read(ApiHandlers<CallContext> handlers)
    {
        var bindings = new List<Binding>();
        var problems = new List<string>();
        foreach (var (cls, contract, handler) in handlers.All())
        {
            var map = handler.GetType().GetInterfaceMap(contract);
            var implementations = new Dictionary<string, MethodInfo>(StringComparer.Ordinal);
            for (var i = 0; i < map.InterfaceMethods.Length; i++)
            {
                if (map.TargetMethods[i].DeclaringType != contract)
                {
                    implementations[map.InterfaceMethods[i].Name] = map.TargetMethods[i];
                }
            }
            problems.AddRange(Strays(handler.GetType(), contract));
            foreach (var message in cls.Messages.Where(m => m.IsCustom))
            {
                var implemented = implementations.TryGetValue(Naming.Pascal(message.Name), out var method);
                var runsAs = implemented ? ReadDeclaration(message, method!, problems) : null;
                var runsOn = implemented ? ReadPlacement(message, method!, problems) : null;
                bindings.Add(new Binding(message, implemented, runsAs, runsOn));
            }
        }
        if (problems.Count > 0)
        {
            throw new InvalidOperationException("message handlers do not match the datamodel:\n  " + string.Join("\n  ", problems));
        }
        return bindings;
    }

    /// <summary>
    /// Public methods of a handler type that implement no member of its contract: each is a
    /// message someone meant to implement under a wrong name or with wrong parameters.
    /// </summary>
    public static IReadOnlyList<string> Strays(Type handlerType, Type contract)
    {
        if (handlerType.IsNested && handlerType.DeclaringType == typeof(ApiHandlers<CallContext>))
        {
            return [];
        }
        var implementing = handlerType.GetInterfaceMap(contract).TargetMethods.ToHashSet();
        return handlerType.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
            .Where(m => !m.IsSpecialName && !implementing.Contains(m))
            .Select(m => $"{handlerType.Name}.{m.Name}({string.Join(", ", m.GetParameters().Select(p => p.ParameterType.Name))}) implements no message of {contract.Name.Split('`')[0]}")
            .ToList();
    }

    private static PlacementDeclaration? ReadPlacement(MessageMeta message, MethodInfo method, List<string> problems)
    {
        if (method.GetCustomAttribute<RunsOnAttribute>() is not { } attribute)
        {
            return null;
        }
        var parameters = method.GetParameters().Skip(1).ToArray();
        var type = attribute.Selection == HostSelection.NamedHost ? nameof(HostRef) : Naming.Pascal(message.Owner.Name) + "Ref";
        var index = attribute.On is { } on
            ? Array.FindIndex(parameters, p => p.Name == on)
            : Array.FindIndex(parameters, p => p.ParameterType.Name == type);
        if (index < 0)
        {
            problems.Add($"{message.WireName} runs on {attribute.Selection}, but has no parameter {attribute.On ?? $"of type {type}"}");
            return null;
        }
        return new PlacementDeclaration(attribute.Selection, index, message.Owner);
    }

    private static OperationDeclaration? ReadDeclaration(MessageMeta message, MethodInfo method, List<string> problems)
    {
        var attribute = method.GetCustomAttributes().OfType<IRunsAs>().SingleOrDefault();
        if (attribute is null)
        {
            return null;
        }
        var cls = message.Owner;
        var operations = cls.OperationsEnum;
        var enumType = attribute.Operation.GetType();
        if (operations is null || enumType.Name != Naming.Pascal(operations.Name))
        {
            problems.Add($"{message.WireName} runs as {enumType.Name}.{attribute.Operation}, but {cls.Name} tracks {operations?.Name ?? "no operations"}");
            return null;
        }
        // Generated enums list their members in datamodel order.
        var wire = operations.Values[Convert.ToInt32(attribute.Operation, System.Globalization.CultureInfo.InvariantCulture)];
        var parameters = method.GetParameters().Skip(1).ToArray();
        var index = attribute.On is { } on
            ? Array.FindIndex(parameters, p => p.Name == on)
            : Array.FindIndex(parameters, p => p.ParameterType.Name == Naming.Pascal(cls.Name) + "Ref");
        if (index < 0)
        {
            problems.Add($"{message.WireName} runs as {wire}, but has no parameter {(attribute.On is null ? $"of type {Naming.Pascal(cls.Name)}Ref" : attribute.On)}");
            return null;
        }
        return new OperationDeclaration(cls, index, wire);
    }
}
