using System.Collections.Frozen;
using System.Reflection;
using Xapi.Model;

namespace Xapi.Server;

/// <summary>
/// Which custom messages have a hand-written implementation: those whose interface method is
/// implemented by the class's handler rather than left to the generated default.
/// </summary>
public static class CustomImplementations
{
    public static FrozenSet<MessageMeta> Find(CustomHandlers handlers)
    {
        var implemented = new HashSet<MessageMeta>();
        foreach (var (className, interfaceType, implementation) in handlers.All())
        {
            var map = implementation.GetType().GetInterfaceMap(interfaceType);
            var ownMethods = new HashSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < map.InterfaceMethods.Length; i++)
            {
                if (map.TargetMethods[i].DeclaringType != interfaceType)
                {
                    ownMethods.Add(map.InterfaceMethods[i].Name);
                }
            }
            foreach (var message in ApiSchema.Class(className).Messages)
            {
                if (message.Invoke is not null && ownMethods.Contains(Naming.Pascal(message.Name)))
                {
                    implemented.Add(message);
                }
            }
        }
        return implemented.ToFrozenSet();
    }
}
