using System.Globalization;
using System.Text;

namespace Xapi.Codegen;

/// <summary>The generated files themselves.</summary>
public static partial class Generator
{
    private static string GenerateSchema(Schema schema)
    {
        var sb = new StringBuilder(Header);
        sb.Append("namespace Xapi.Model;\n\npublic static partial class ApiSchema\n{\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public const int ApiVersionMajor = {schema.ApiVersionMajor};\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public const int ApiVersionMinor = {schema.ApiVersionMinor};\n\n");

        sb.Append("    public static readonly EnumMeta[] Enums =\n    [\n");
        foreach (var e in schema.Enums)
        {
            sb.Append(CultureInfo.InvariantCulture, $"        new({Literal(e.Name)}, [{string.Join(", ", e.Values.Select(v => Literal(v.Name)))}]),\n");
        }
        sb.Append("    ];\n\n");

        sb.Append("    public static readonly ErrorMeta[] Errors =\n    [\n");
        foreach (var e in schema.Errors)
        {
            var ps = e.Params is null ? "null" : $"[{string.Join(", ", e.Params.Select(Literal))}]";
            sb.Append(CultureInfo.InvariantCulture, $"        new({Literal(e.Code)}, {ps}, {Literal(e.Description)}),\n");
        }
        sb.Append("    ];\n\n");

        sb.Append("    public static readonly ClassMeta[] Classes =\n    [\n");
        foreach (var cls in schema.Classes)
        {
            sb.Append(CultureInfo.InvariantCulture, $"        {Pascal(cls.Name)}Class(),\n");
        }
        sb.Append("    ];\n}\n");
        return sb.ToString();
    }

    private static string GenerateEnums(Schema schema)
    {
        var sb = new StringBuilder(Header);
        sb.Append("namespace Xapi.Model;\n");
        foreach (var e in schema.Enums)
        {
            var typeName = EnumTypeName(e.Name);
            var members = EnumMemberNames(e);
            sb.Append(CultureInfo.InvariantCulture, $"\n/// <summary>Datamodel enum <c>{e.Name}</c>.</summary>\npublic enum {typeName}\n{{\n");
            for (var i = 0; i < members.Count; i++)
            {
                if (e.Values[i].Description.Length > 0)
                {
                    sb.Append(CultureInfo.InvariantCulture, $"    /// <summary><c>{XmlDoc(e.Values[i].Name)}</c>: {XmlDoc(e.Values[i].Description)}</summary>\n");
                }
                sb.Append(CultureInfo.InvariantCulture, $"    {members[i]},\n");
            }
            sb.Append("}\n");
            sb.Append(CultureInfo.InvariantCulture, $"\npublic static class {typeName}Wire\n{{\n");
            sb.Append(CultureInfo.InvariantCulture, $"    public static string ToWire(this {typeName} value) => value switch\n    {{\n");
            for (var i = 0; i < members.Count; i++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"        {typeName}.{members[i]} => {Literal(e.Values[i].Name)},\n");
            }
            sb.Append("        _ => throw new ArgumentOutOfRangeException(nameof(value)),\n    };\n\n");
            sb.Append(CultureInfo.InvariantCulture, $"    public static {typeName} Parse(string wire) => wire switch\n    {{\n");
            for (var i = 0; i < members.Count; i++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"        {Literal(e.Values[i].Name)} => {typeName}.{members[i]},\n");
            }
            sb.Append(CultureInfo.InvariantCulture, $"        _ => throw XenApiErrors.FieldTypeError({Literal(e.Name)}),\n    }};\n}}\n");
        }
        return sb.ToString();
    }

    /// <summary>Every error code as a constant, and a factory per code taking the schema's parameters.</summary>
    private static string GenerateErrors(Schema schema)
    {
        var sb = new StringBuilder(Header);
        sb.Append("namespace Xapi.Model;\n\n/// <summary>Every XenAPI error code of the datamodel.</summary>\npublic static class ErrorCodes\n{\n");
        var first = true;
        foreach (var e in schema.Errors)
        {
            if (!first)
            {
                sb.Append('\n');
            }
            first = false;
            if (e.Description.Length > 0)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    /// <summary>{XmlDoc(e.Description)}</summary>\n");
            }
            sb.Append(CultureInfo.InvariantCulture, $"    public const string {Pascal(e.Code.ToLowerInvariant())} = {Literal(e.Code)};\n");
        }
        sb.Append("}\n\n/// <summary>A factory per error code, with the code's parameters in wire order.</summary>\npublic static class XenApiErrors\n{\n");
        first = true;
        foreach (var e in schema.Errors)
        {
            if (!first)
            {
                sb.Append('\n');
            }
            first = false;
            var name = Pascal(e.Code.ToLowerInvariant());
            sb.Append(CultureInfo.InvariantCulture, $"    /// <summary><c>{e.Code}</c>{(e.Description.Length > 0 ? ": " + XmlDoc(e.Description) : "")}</summary>\n");
            if (e.Params is null)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    public static XenApiException {name}(params string[] parameters) => new(ErrorCodes.{name}, parameters);\n");
                continue;
            }
            var names = UniqueCamel(e.Params);
            var ps = string.Join(", ", names.Select(n => "string " + n));
            var args = string.Concat(names.Select(n => ", " + n));
            sb.Append(CultureInfo.InvariantCulture, $"    public static XenApiException {name}({ps}) => new(ErrorCodes.{name}{args});\n");
        }
        sb.Append("}\n");
        return sb.ToString();
    }

    private static List<string> UniqueCamel(IEnumerable<string> names)
    {
        var used = new HashSet<string>(StringComparer.Ordinal) { "call", "context" };
        var result = new List<string>();
        foreach (var name in names)
        {
            var candidate = Camel(name);
            for (var i = 2; !used.Add(candidate); i++)
            {
                candidate = Camel(name) + i.ToString(CultureInfo.InvariantCulture);
            }
            result.Add(candidate);
        }
        return result;
    }

    private static string GenerateHandlers(Schema schema)
    {
        var sb = new StringBuilder(Header);
        sb.Append("namespace Xapi.Model;\n\n");
        sb.Append("/// <summary>\n/// The handler of every class's custom messages, as the dispatcher calls them. A class whose\n");
        sb.Append("/// handler is not set, or a message its handler does not implement, gets the contract's\n/// default: NOT_IMPLEMENTED.\n/// </summary>\n");
        sb.Append("public sealed class ApiHandlers<TContext>\n{\n");
        foreach (var cls in schema.Classes)
        {
            var p = Pascal(cls.Name);
            sb.Append(CultureInfo.InvariantCulture, $"    public I{p}Api<TContext> {p} {{ get; set; }} = Defaults.Instance;\n\n");
        }
        sb.Append("    /// <summary>Each class's contract type and current handler.</summary>\n");
        sb.Append("    public IEnumerable<(ClassMeta Class, Type Contract, object Handler)> All()\n    {\n");
        for (var i = 0; i < schema.Classes.Count; i++)
        {
            var p = Pascal(schema.Classes[i].Name);
            sb.Append(CultureInfo.InvariantCulture, $"        yield return (ApiSchema.Classes[{Int(i)}], typeof(I{p}Api<TContext>), {p});\n");
        }
        sb.Append("    }\n\n");
        sb.Append("    /// <summary>A call of one custom message on its class's current handler, taking runtime-typed arguments.</summary>\n");
        sb.Append("    public Func<TContext, object?[], ValueTask<object?>> Bind(MessageMeta message) => message.Owner.Ordinal switch\n    {\n");
        for (var i = 0; i < schema.Classes.Count; i++)
        {
            var p = Pascal(schema.Classes[i].Name);
            sb.Append(CultureInfo.InvariantCulture, $"        {Int(i)} => Bind({p}, I{p}Api<TContext>.Invoker(message.Name), message),\n");
        }
        sb.Append("        _ => throw new ArgumentOutOfRangeException(nameof(message)),\n    };\n\n");
        sb.Append("    private static Func<TContext, object?[], ValueTask<object?>> Bind<TApi>(TApi api, Func<TApi, TContext, object?[], ValueTask<object?>>? invoker, MessageMeta message) =>\n");
        sb.Append("        invoker is null ? throw new ArgumentException($\"{message.WireName} is not a custom message\", nameof(message)) : (context, args) => invoker(api, context, args);\n\n");
        sb.Append("    private sealed class Defaults :\n");
        sb.Append(string.Join(",\n", schema.Classes.Select(c => $"        I{Pascal(c.Name)}Api<TContext>")));
        sb.Append("\n    {\n        public static readonly Defaults Instance = new();\n    }\n}\n");
        return sb.ToString();
    }

    private static string GenerateClass(SchemaClass cls, int ordinal)
    {
        var p = Pascal(cls.Name);
        var sb = new StringBuilder(Header);
        sb.Append("namespace Xapi.Model;\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"/// <summary>A reference to a <c>{cls.Name}</c>: {XmlDoc(cls.Description)}</summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"public readonly record struct {p}Ref(string Value) : IObjectRef\n{{\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static readonly {p}Ref Null = new(XType.NullRef);\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"    /// <summary>The datamodel class <c>{cls.Name}</c>.</summary>\n    public static ClassMeta Class => ApiSchema.Classes[{Int(ordinal)}];\n\n");
        sb.Append("    public bool IsNull => Value == XType.NullRef;\n\n    public override string ToString() => Value;\n}\n");

        if (cls.Fields.Count > 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"\n/// <summary>Row ordinals of <c>{cls.Name}</c>'s fields.</summary>\npublic static class {p}Fields\n{{\n");
            for (var i = 0; i < cls.Fields.Count; i++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    public const int {Pascal(cls.Fields[i].Name)} = {Int(i)};\n");
            }
            sb.Append("}\n");
        }
        if (IsStored(cls))
        {
            AppendRowAccess(sb, cls, p);
        }
        AppendContract(sb, cls, p);
        AppendMetadata(sb, cls, p);
        return sb.ToString();
    }

    private static void AppendRowAccess(StringBuilder sb, SchemaClass cls, string p)
    {
        foreach (var field in cls.Fields)
        {
            if (Pascal(field.Name) is "Ref" or "Values" or "Class" or "Wrap" or "Source")
            {
                throw new InvalidOperationException($"{cls.Name}.{field.Name} collides with a member of the generated record view");
            }
        }
        sb.Append(CultureInfo.InvariantCulture, $"\n/// <summary>Typed, read-only view of a <c>{cls.Name}</c> row as a snapshot or transaction holds it.</summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"public readonly struct {p}Record(IRowReader source, string reference, IReadOnlyList<object?> values) : IRecordView<{p}Record>\n{{\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static ClassMeta Class => {p}Ref.Class;\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static {p}Record Wrap(IRowReader source, string reference, IReadOnlyList<object?> values) => new(source, reference, values);\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public {p}Ref Ref => new(reference);\n\n");
        sb.Append("    /// <summary>The snapshot or transaction the row was read from.</summary>\n    public IRowReader Source => source;\n\n");
        sb.Append("    /// <summary>Stored values by field ordinal; computed one-to-many fields are read through the source.</summary>\n");
        sb.Append("    public IReadOnlyList<object?> Values => values;\n");
        for (var i = 0; i < cls.Fields.Count; i++)
        {
            var f = cls.Fields[i];
            var source = f.ManyOf is null ? $"values[{Int(i)}]" : $"source.ManyField(Class.Fields[{Int(i)}], reference)";
            AppendFieldDoc(sb, f);
            sb.Append(CultureInfo.InvariantCulture, $"    public {ClrType(f.Type)} {Pascal(f.Name)} => {FromRuntime(f.Type, source)};\n");
        }
        sb.Append("}\n");

        sb.Append(CultureInfo.InvariantCulture, $"\n/// <summary>A <c>{cls.Name}</c> row being written: typed accessors over its value array, inside a transaction.</summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"public readonly struct {p}Values(object?[] values)\n{{\n");
        var firstField = true;
        for (var i = 0; i < cls.Fields.Count; i++)
        {
            var f = cls.Fields[i];
            if (f.ManyOf is not null)
            {
                continue;
            }
            if (!firstField)
            {
                sb.Append('\n');
            }
            firstField = false;
            sb.Append(CultureInfo.InvariantCulture, $"    public {ClrType(f.Type)} {Pascal(f.Name)}\n    {{\n");
            sb.Append(CultureInfo.InvariantCulture, $"        get => {FromRuntime(f.Type, $"values[{Int(i)}]")};\n");
            sb.Append(CultureInfo.InvariantCulture, $"        set => values[{Int(i)}] = {ToRuntime(f.Type, "value")};\n    }}\n");
        }
        sb.Append("}\n");

        sb.Append(CultureInfo.InvariantCulture, $"\n/// <summary>Typed reads and writes of <c>{cls.Name}</c> rows.</summary>\npublic static class {p}Rows\n{{\n");
        sb.Append(CultureInfo.InvariantCulture, $"    /// <exception cref=\"XenApiException\">HANDLE_INVALID when there is no such {cls.Name}.</exception>\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static {p}Record Get(this IRowReader db, {p}Ref reference) => new(db, reference.Value, db.GetRowValues({p}Ref.Class, reference.Value));\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static bool TryGet(this IRowReader db, {p}Ref reference, out {p}Record record)\n    {{\n");
        sb.Append(CultureInfo.InvariantCulture, $"        var found = db.TryGetRowValues({p}Ref.Class, reference.Value, out var values);\n");
        sb.Append("        record = found ? new(db, reference.Value, values) : default;\n        return found;\n    }\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static void Update(this IRowWriter tx, {p}Ref reference, Action<{p}Values> edit) =>\n");
        sb.Append(CultureInfo.InvariantCulture, $"        tx.UpdateRow({p}Ref.Class, reference.Value, values => edit(new {p}Values(values)));\n\n");
        sb.Append("    /// <summary>Inserts a row: fields take their datamodel defaults, then <paramref name=\"init\"/> sets what it needs; an empty uuid is generated.</summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"    public static {p}Ref Create{p}(this IRowWriter tx, Action<{p}Values> init, {p}Ref? reference = null) =>\n");
        sb.Append(CultureInfo.InvariantCulture, $"        new(tx.CreateRow({p}Ref.Class, values => init(new {p}Values(values)), reference?.Value));\n");
        sb.Append("}\n");
    }

    private static void AppendFieldDoc(StringBuilder sb, SchemaField field)
    {
        sb.Append(CultureInfo.InvariantCulture, $"\n    /// <summary><c>{field.Name}</c>{(field.Description.Length > 0 ? ": " + XmlDoc(field.Description) : "")}</summary>\n");
    }

    private static void AppendContract(StringBuilder sb, SchemaClass cls, string p)
    {
        var custom = cls.Messages.Where(m => m.Implicit.Length == 0).ToList();
        sb.Append(CultureInfo.InvariantCulture,
            $"\n/// <summary>\n/// The custom messages of <c>{cls.Name}</c>: the contract its handler implements\n/// (<c>src/Xapi.Server/Api/{cls.Name}/{p}Api.cs</c>). A message the handler leaves to this default answers\n/// NOT_IMPLEMENTED, or, for an accessor, behaves as the plain accessor without the real server's checks.\n/// </summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"public interface I{p}Api<TContext>\n{{\n");
        var invokers = new List<string>();
        foreach (var m in custom)
        {
            var names = UniqueCamel(m.Params.Select(x => x.Name));
            var ps = string.Concat(m.Params.Select((x, i) => $", {ClrType(x.Type)} {names[i]}"));
            var wire = cls.Name + "." + m.Name;
            sb.Append(CultureInfo.InvariantCulture, $"    /// <summary><c>{wire}</c>{(m.Description.Length > 0 ? ": " + XmlDoc(m.Description) : "")}</summary>\n");
            for (var i = 0; i < m.Params.Count; i++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    /// <param name=\"{names[i].TrimStart('@')}\">{XmlDoc(m.Params[i].Description)}</param>\n");
            }
            var remarks = new List<string>();
            if (m.Errors.Count > 0)
            {
                remarks.Add("Errors: " + string.Join(", ", m.Errors) + ".");
            }
            remarks.Add("Roles: " + (m.Roles.Count == 0 ? "none" : string.Join(", ", m.Roles)) + ".");
            if (m.Async)
            {
                remarks.Add("Also callable as <c>Async." + wire + "</c>.");
            }
            if (m.Generic.Length > 0)
            {
                remarks.Add("Accessor <c>" + m.Generic + "</c>.");
            }
            sb.Append(CultureInfo.InvariantCulture, $"    /// <remarks>{string.Join(" ", remarks)}</remarks>\n");
            sb.Append(CultureInfo.InvariantCulture,
                $"    {ResultType(m.Result)} {Pascal(m.Name)}(TContext context{ps}) => throw XenApiErrors.NotImplemented({Literal(wire)});\n\n");
            var args = string.Concat(m.Params.Select((x, i) => ", " + FromRuntime(x.Type, $"a[{Int(i)}]")));
            invokers.Add($"        {Literal(m.Name)} => static (api, context, a) => {ResultAdapter(m.Result, $"api.{Pascal(m.Name)}(context{args})")},\n");
        }
        sb.Append("    /// <summary>The call of one custom message by name, taking runtime-typed arguments; null for other names.</summary>\n");
        sb.Append(CultureInfo.InvariantCulture, $"    static Func<I{p}Api<TContext>, TContext, object?[], ValueTask<object?>>? Invoker(string message) => message switch\n    {{\n");
        foreach (var invoker in invokers)
        {
            sb.Append(invoker);
        }
        sb.Append("        _ => null,\n    };\n}\n");
    }

    private static void AppendMetadata(StringBuilder sb, SchemaClass cls, string p)
    {
        sb.Append(CultureInfo.InvariantCulture, $"\npublic static partial class ApiSchema\n{{\n    private static ClassMeta {p}Class() => new({Literal(cls.Name)}, Lifecycle.{Pascal(cls.Lifecycle)},\n        [\n");
        foreach (var f in cls.Fields)
        {
            var qualifier = f.Qualifier switch
            {
                "RW" => "Qualifier.RW",
                "RO/constructor" => "Qualifier.ROConstructor",
                "RO/runtime" => "Qualifier.RORuntime",
                _ => throw new InvalidOperationException($"Unknown qualifier {f.Qualifier}"),
            };
            var dv = f.HasDefault ? DefaultExpression(f.Default, f.Type) : "null";
            var manyOf = f.ManyOf is null ? "null" : Literal(f.ManyOf);
            var references = f.References is { } r
                ? $", new ReferenceRule({(r.NullAllowed ? "true" : "false")}, {(r.NullAllowedWhen is null ? "null" : Literal(r.NullAllowedWhen))}, {(r.InvalidValueName is null ? "null" : Literal(r.InvalidValueName))})"
                : "";
            sb.Append(CultureInfo.InvariantCulture,
                $"            new({Literal(f.Name)}, {Literal(f.Type)}, {qualifier}, {(f.HasDefault ? "true" : "false")}, {dv}, {manyOf}, Lifecycle.{Pascal(f.Lifecycle)}{references}),\n");
        }
        sb.Append("        ],\n        [\n");
        foreach (var m in cls.Messages)
        {
            var ps = string.Join(", ", m.Params.Select(x => $"new({Literal(x.Name)}, XType.Parse({Literal(x.Type)}), {(x.Optional ? "true" : "false")})"));
            var roles = m.Roles.Count == 0 ? "RoleSet.None" : string.Join(" | ", m.Roles.Select(r => "RoleSet." + Pascal(r)));
            var errors = string.Join(", ", m.Errors.Select(Literal));
            var (kind, field) = ImplicitParts(m.Implicit.Length > 0 ? m.Implicit : m.Generic);
            var isCustom = m.Implicit.Length == 0;
            sb.Append(CultureInfo.InvariantCulture,
                $"            new({Literal(m.Name)}, {(m.TakesSession ? "true" : "false")}, [{ps}], {Literal(m.Result)}, {roles}, [{errors}], ImplicitKind.{kind}, {(field is null ? "null" : Literal(field))}, {(m.Async ? "true" : "false")}, {(m.Internal ? "true" : "false")}, Lifecycle.{Pascal(m.Lifecycle)}, {(isCustom ? "true" : "false")}),\n");
        }
        sb.Append("        ]);\n}\n");
    }

    private static (string Kind, string? Field) ImplicitParts(string implicitKind)
    {
        if (implicitKind.Length == 0)
        {
            return ("None", null);
        }
        var colon = implicitKind.IndexOf(':');
        return colon < 0 ? (Pascal(implicitKind), null) : (Pascal(implicitKind[..colon]), implicitKind[(colon + 1)..]);
    }
}
