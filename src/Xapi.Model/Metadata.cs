using System.Collections.Frozen;

namespace Xapi.Model;

public enum Qualifier
{
    RW,
    ROConstructor,
    RORuntime,
}

public enum Lifecycle
{
    Published,
    Prototyped,
    Deprecated,
    Removed,
}

public enum ImplicitKind
{
    None,
    GetRecord,
    GetByUuid,
    GetByNameLabel,
    GetAll,
    GetAllRecords,
    GetAllRecordsWhere,
    GetAllWhere,
    Create,
    Destroy,
    Get,
    Set,
    AddTo,
    RemoveFrom,
    Add,
    Remove,
}

/// <summary>The datamodel's roles, strongest first; a message lists the roles allowed to call it.</summary>
[Flags]
public enum RoleSet
{
    None = 0,
    PoolAdmin = 1,
    PoolOperator = 2,
    VmPowerAdmin = 4,
    VmAdmin = 8,
    VmOperator = 16,
    ReadOnly = 32,
    ClientCert = 64,
}

public static class Roles
{
    public static readonly IReadOnlyList<(RoleSet Role, string Name)> All =
    [
        (RoleSet.PoolAdmin, "pool-admin"),
        (RoleSet.PoolOperator, "pool-operator"),
        (RoleSet.VmPowerAdmin, "vm-power-admin"),
        (RoleSet.VmAdmin, "vm-admin"),
        (RoleSet.VmOperator, "vm-operator"),
        (RoleSet.ReadOnly, "read-only"),
        (RoleSet.ClientCert, "client-cert"),
    ];

    public static string NameOf(RoleSet role) => All.First(r => r.Role == role).Name;

    public static RoleSet Parse(string name) =>
        All.FirstOrDefault(r => r.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Role;
}

public sealed class EnumMeta
{
    private readonly FrozenDictionary<string, string> _canonical;

    public EnumMeta(string name, string[] values)
    {
        Name = name;
        Values = values;
        _canonical = values.ToFrozenDictionary(v => v, v => v, StringComparer.OrdinalIgnoreCase);
    }

    public string Name { get; }

    public IReadOnlyList<string> Values { get; }

    /// <summary>Enum names match case-insensitively on input and are emitted in datamodel case.</summary>
    public bool TryCanonical(string value, out string canonical)
    {
        if (_canonical.TryGetValue(value, out var found))
        {
            canonical = found;
            return true;
        }
        canonical = "";
        return false;
    }
}

/// <param name="Description">The datamodel's sentence for the error, as real <c>xe</c> prints it.</param>
public sealed record ErrorMeta(string Code, IReadOnlyList<string>? Params, string Description = "");

/// <summary>
/// What a client may write into a field holding references, generated from the datamodel and
/// <c>schema/references.json</c>: every reference names an existing object of its class, or
/// is OpaqueRef:NULL where <see cref="NullAllowed"/> (or, with <see cref="NullAllowedWhen"/>,
/// where that bool field of the row being written is true). A refused reference answers
/// HANDLE_INVALID [class, ref], or INVALID_VALUE [<see cref="InvalidValueName"/>, ref] where
/// the real server checks the field itself and answers that.
/// </summary>
public sealed record ReferenceRule(bool NullAllowed, string? NullAllowedWhen, string? InvalidValueName);

public sealed class FieldMeta
{
    public FieldMeta(string name, string type, Qualifier qualifier, bool hasDefault, object? defaultValue, string? manyOf, Lifecycle lifecycle,
        ReferenceRule? references = null)
    {
        Name = name;
        Type = XType.Parse(type);
        Qualifier = qualifier;
        HasDefault = hasDefault;
        _declaredDefault = defaultValue;
        ManyOf = manyOf;
        Lifecycle = lifecycle;
        References = references;
    }

    public string Name { get; }

    /// <summary>Set for fields holding references (a ref, or refs in a set, map or option).</summary>
    public ReferenceRule? References { get; }

    /// <summary>Whether OpaqueRef:NULL may be written here, given the row as it will be stored.</summary>
    public bool AllowsNullIn(IReadOnlyList<object?> row) => References switch
    {
        { NullAllowed: true } => true,
        { NullAllowedWhen: { } when } => row[Owner.FieldsByName[when].Ordinal] is true,
        _ => false,
    };

    public XType Type { get; }

    public Qualifier Qualifier { get; }

    /// <summary>Fields without a default must be supplied to an implicit <c>create</c>.</summary>
    public bool HasDefault { get; }

    private readonly object? _declaredDefault;

    // Computed on first use: zero values of enum types need the enum table, which is built
    // after the classes.
    public object? DefaultValue => HasDefault ? _declaredDefault : Type.ZeroValue();

    /// <summary>For computed "many" sides, the <c>Class.field</c> that points back here.</summary>
    public string? ManyOf { get; }

    public Lifecycle Lifecycle { get; }

    public ClassMeta Owner { get; internal set; } = null!;

    /// <summary>The field's index in a row's value array.</summary>
    public int Ordinal { get; internal set; }

    public bool IsWritable => Qualifier == Qualifier.RW;

    /// <summary>Constructor fields and writable fields are what an implicit <c>create</c> takes.</summary>
    public bool IsConstructorArgument => Qualifier != Qualifier.RORuntime;
}

public sealed record ParamMeta(string Name, XType Type, bool Optional)
{
    /// <summary>What an optional parameter left out of a call takes.</summary>
    public object? DefaultValue => Type.ZeroValue();
}

public sealed class MessageMeta
{
    public MessageMeta(string name, bool takesSession, ParamMeta[] parameters, string result, RoleSet roles,
        string[] errors, ImplicitKind implicitKind, string? implicitField, bool isAsync, bool isInternal, Lifecycle lifecycle,
        bool isCustom)
    {
        Name = name;
        TakesSession = takesSession;
        Params = parameters;
        Result = XType.Parse(result);
        Roles = roles;
        Errors = errors;
        Implicit = implicitKind;
        ImplicitFieldName = implicitField;
        IsAsync = isAsync;
        IsInternal = isInternal;
        Lifecycle = lifecycle;
        IsCustom = isCustom;
        var required = 0;
        for (var i = 0; i < parameters.Length; i++)
        {
            if (!parameters[i].Optional)
            {
                required = i + 1;
            }
        }
        MinimumArity = required;
    }

    public string Name { get; }

    public ClassMeta Owner { get; internal set; } = null!;

    public string WireName => $"{Owner.Name}.{Name}";

    public bool TakesSession { get; }

    public IReadOnlyList<ParamMeta> Params { get; }

    /// <summary>Trailing optional parameters may be left out, down to this count.</summary>
    public int MinimumArity { get; }

    public XType Result { get; }

    public RoleSet Roles { get; }

    public IReadOnlyList<string> Errors { get; }

    public ImplicitKind Implicit { get; }

    public string? ImplicitFieldName { get; }

    public FieldMeta? ImplicitField => ImplicitFieldName is null ? null : Owner.FieldsByName[ImplicitFieldName];

    public bool IsAsync { get; }

    public bool IsInternal { get; }

    public Lifecycle Lifecycle { get; }

    /// <summary>
    /// Whether the message has a member in its class's handler contract (<c>IVMApi</c>, …).
    /// A custom message with an <see cref="Implicit"/> kind is shaped like an accessor: it
    /// behaves as the plain accessor until its handler implements the real server's checks.
    /// </summary>
    public bool IsCustom { get; }

    /// <summary>A custom message that falls back to the plain accessor while it has no handler.</summary>
    public bool IsCustomAccessor => IsCustom && Implicit != ImplicitKind.None;
}

public sealed class ClassMeta
{
    public ClassMeta(string name, Lifecycle lifecycle, FieldMeta[] fields, MessageMeta[] messages)
    {
        Name = name;
        // Kept rather than computed on each read: an event.from dump reads it once per object.
        EventName = name.ToLowerInvariant();
        Lifecycle = lifecycle;
        Fields = fields;
        Messages = messages;
        for (var i = 0; i < fields.Length; i++)
        {
            fields[i].Owner = this;
            fields[i].Ordinal = i;
        }
        foreach (var message in messages)
        {
            message.Owner = this;
        }
        FieldsByName = fields.ToFrozenDictionary(f => f.Name, StringComparer.Ordinal);
        MessagesByName = messages.ToFrozenDictionary(m => m.Name, StringComparer.Ordinal);
        IsStored = MessagesByName.ContainsKey("get_all_records") || MessagesByName.ContainsKey("get_record");
        UuidField = FieldsByName.GetValueOrDefault("uuid");
        RequiredForCreate = fields.Where(f => f.IsConstructorArgument && f.ManyOf is null && !f.HasDefault && f.Name != "uuid").ToArray();
        NameLabelField = FieldsByName.GetValueOrDefault("name_label");
        CurrentOperationsField = FieldsByName.GetValueOrDefault("current_operations");
        AllowedOperationsField = FieldsByName.GetValueOrDefault("allowed_operations");
        BlockedOperationsField = FieldsByName.GetValueOrDefault("blocked_operations");
    }

    public string Name { get; }

    /// <summary>Lower-case name as events and <c>valid_ref_counts</c> spell it.</summary>
    public string EventName { get; }

    public Lifecycle Lifecycle { get; }

    public IReadOnlyList<FieldMeta> Fields { get; }

    public IReadOnlyList<MessageMeta> Messages { get; }

    public FrozenDictionary<string, FieldMeta> FieldsByName { get; }

    public FrozenDictionary<string, MessageMeta> MessagesByName { get; }

    /// <summary>Whether objects of this class live in the database (it has records).</summary>
    public bool IsStored { get; }

    public FieldMeta? UuidField { get; }

    /// <summary>What an implicit <c>create</c> must be given: constructor fields without a default.</summary>
    public IReadOnlyList<FieldMeta> RequiredForCreate { get; }

    /// <summary>A record an implicit <c>create</c> accepts: every required field at its zero value.</summary>
    public Dictionary<string, object?> MinimalRecord() => RequiredForCreate.ToDictionary(f => f.Name, f => f.DefaultValue);

    public FieldMeta? NameLabelField { get; }

    /// <summary><c>current_operations</c>, for classes whose operations are tracked.</summary>
    public FieldMeta? CurrentOperationsField { get; }

    public FieldMeta? AllowedOperationsField { get; }

    public FieldMeta? BlockedOperationsField { get; }

    /// <summary>The enum of operations this class tracks in <c>current_operations</c>, if any.</summary>
    public EnumMeta? OperationsEnum => CurrentOperationsField?.Type.Element is { Kind: XTypeKind.Enum } element ? element.EnumMeta : null;

    public int Ordinal { get; internal set; }
}
