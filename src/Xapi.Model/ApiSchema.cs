using System.Collections.Frozen;

namespace Xapi.Model;

public static partial class ApiSchema
{
    public static FrozenDictionary<string, ClassMeta> ClassesByName => Index.ClassesByName;

    /// <summary>Class names in any case, as <c>event.from</c> subscriptions spell them.</summary>
    public static FrozenDictionary<string, ClassMeta> ClassesByNameIgnoreCase => Index.ClassesByNameIgnoreCase;

    public static FrozenDictionary<string, EnumMeta> EnumsByName => Index.EnumsByName;

    public static FrozenDictionary<string, ErrorMeta> ErrorsByCode => Index.ErrorsByCode;

    /// <summary>Every synchronous wire name, <c>Class.message</c>.</summary>
    public static FrozenDictionary<string, MessageMeta> MessagesByWireName => Index.MessagesByWireName;

    public static ClassMeta Class(string name) => ClassesByName[name];

    // A nested class so that the generated arrays (in another file of this partial class)
    // are initialised before anything indexes them.
    private static class Index
    {
        public static readonly FrozenDictionary<string, ClassMeta> ClassesByName = IndexClasses();

        public static readonly FrozenDictionary<string, ClassMeta> ClassesByNameIgnoreCase =
            Classes.ToFrozenDictionary(c => c.Name, StringComparer.OrdinalIgnoreCase);

        public static readonly FrozenDictionary<string, EnumMeta> EnumsByName =
            Enums.ToFrozenDictionary(e => e.Name, StringComparer.Ordinal);

        public static readonly FrozenDictionary<string, ErrorMeta> ErrorsByCode =
            Errors.ToFrozenDictionary(e => e.Code, StringComparer.Ordinal);

        public static readonly FrozenDictionary<string, MessageMeta> MessagesByWireName =
            Classes.SelectMany(c => c.Messages).ToFrozenDictionary(m => m.WireName, StringComparer.Ordinal);

        private static FrozenDictionary<string, ClassMeta> IndexClasses()
        {
            for (var i = 0; i < Classes.Length; i++)
            {
                Classes[i].Ordinal = i;
            }
            return Classes.ToFrozenDictionary(c => c.Name, StringComparer.Ordinal);
        }
    }
}
