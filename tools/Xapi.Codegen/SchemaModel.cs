using System.Text.Json;
using System.Text.Json.Nodes;

namespace Xapi.Codegen;

/// <summary>The project's own schema format, as read from <c>schema/</c>.</summary>
public sealed record SchemaClass(
    string Name,
    string Description,
    string Lifecycle,
    IReadOnlyList<SchemaField> Fields,
    IReadOnlyList<SchemaMessage> Messages);

public sealed record SchemaField(
    string Name,
    string Type,
    string Qualifier,
    JsonNode? Default,
    bool HasDefault,
    string? ManyOf,
    string Lifecycle,
    string Description)
{
    /// <summary>For fields holding references: what a client may write into them.</summary>
    public SchemaReferenceRule? References { get; init; }
}

/// <summary>
/// What a client may write into a field holding references: each must name an existing
/// object, or be OpaqueRef:NULL where <see cref="NullAllowed"/> (or, when
/// <see cref="NullAllowedWhen"/> names a bool field, where the row's value of it is true).
/// A refused reference answers HANDLE_INVALID [class, ref], or INVALID_VALUE
/// [<see cref="InvalidValueName"/>, ref] where the real server answers that.
/// </summary>
public sealed record SchemaReferenceRule(bool NullAllowed, string? NullAllowedWhen, string? InvalidValueName);

public sealed record SchemaParam(string Name, string Type, bool Optional, string Description);

public sealed record SchemaMessage(
    string Name,
    bool TakesSession,
    IReadOnlyList<SchemaParam> Params,
    string Result,
    IReadOnlyList<string> Errors,
    IReadOnlyList<string> Roles,
    string Implicit,
    string Generic,
    bool Async,
    bool Internal,
    string Lifecycle,
    string Description);

public sealed record SchemaEnum(string Name, IReadOnlyList<(string Name, string Description)> Values);

public sealed record SchemaError(string Code, IReadOnlyList<string>? Params, string Description);

public sealed record Schema(
    IReadOnlyList<SchemaClass> Classes,
    IReadOnlyList<SchemaEnum> Enums,
    IReadOnlyList<SchemaError> Errors,
    int ApiVersionMajor,
    int ApiVersionMinor);

public static class SchemaReader
{
    public static Schema Read(string schemaDir)
    {
        var classes = Directory.GetFiles(Path.Combine(schemaDir, "classes"), "*.json")
            .Select(path => ReadClass(JsonNode.Parse(File.ReadAllText(path))!))
            .ToList();
        var order = JsonNode.Parse(File.ReadAllText(Path.Combine(schemaDir, "api.json")))!;
        var classOrder = order["classes"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();
        classes.Sort((a, b) => classOrder.IndexOf(a.Name).CompareTo(classOrder.IndexOf(b.Name)));

        var enums = JsonNode.Parse(File.ReadAllText(Path.Combine(schemaDir, "enums.json")))!.AsArray()
            .Select(n => new SchemaEnum(
                n!["name"]!.GetValue<string>(),
                n["values"]!.AsArray().Select(v => (v!["name"]!.GetValue<string>(), v["description"]?.GetValue<string>() ?? "")).ToList()))
            .ToList();
        var errors = JsonNode.Parse(File.ReadAllText(Path.Combine(schemaDir, "errors.json")))!.AsArray()
            .Select(n => new SchemaError(
                n!["code"]!.GetValue<string>(),
                n["params"] is JsonArray ps ? ps.Select(p => p!.GetValue<string>()).ToList() : null,
                n["description"]?.GetValue<string>() ?? ""))
            .ToList();
        var referencesPath = Path.Combine(schemaDir, ReferencesFile);
        classes = ApplyReferenceRules(classes, File.Exists(referencesPath) ? JsonNode.Parse(File.ReadAllText(referencesPath))!["fields"]!.AsObject() : []);
        return new Schema(classes, enums, errors,
            order["api_version_major"]!.GetValue<int>(), order["api_version_minor"]!.GetValue<int>());
    }

    /// <summary>The hand-written annotations of reference fields, beside the imported schema.</summary>
    public const string ReferencesFile = "references.json";

    private static readonly HashSet<string> ReferenceKeys = ["null_allowed", "null_allowed_when", "invalid_value", "why"];

    /// <summary>
    /// Derives every reference field's rule from the datamodel (a plain ref may be NULL exactly
    /// when its default is NULL; refs inside sets and maps never), then applies the annotations.
    /// An annotation that names no such field, or does not fit it, stops the generator.
    /// </summary>
    private static List<SchemaClass> ApplyReferenceRules(List<SchemaClass> classes, JsonObject annotations)
    {
        var byName = classes.SelectMany(c => c.Fields.Select(f => (Key: $"{c.Name}.{f.Name}", Class: c, Field: f)))
            .ToDictionary(x => x.Key, StringComparer.Ordinal);
        foreach (var (key, node) in annotations)
        {
            if (!byName.TryGetValue(key, out var target) || !HoldsRefs(target.Field.Type))
            {
                throw new InvalidOperationException($"{ReferencesFile}: {key} is not a field holding references");
            }
            var annotation = node!.AsObject();
            if (annotation.Select(p => p.Key).FirstOrDefault(k => !ReferenceKeys.Contains(k)) is { } unknown)
            {
                throw new InvalidOperationException($"{ReferencesFile}: {key} has an unknown key '{unknown}'");
            }
            if (annotation["why"]?.GetValue<string>() is not { Length: > 0 })
            {
                throw new InvalidOperationException($"{ReferencesFile}: {key} must say why");
            }
            var plainRef = target.Field.Type.EndsWith(" ref", StringComparison.Ordinal);
            if (!plainRef && (annotation.ContainsKey("null_allowed") || annotation.ContainsKey("null_allowed_when")))
            {
                throw new InvalidOperationException($"{ReferencesFile}: {key} holds references in a set or map, which are never NULL");
            }
            if (annotation["null_allowed_when"]?.GetValue<string>() is { } when
                && target.Class.Fields.FirstOrDefault(f => f.Name == when) is not { Type: "bool" })
            {
                throw new InvalidOperationException($"{ReferencesFile}: {key} is NULL when '{when}', which is not a bool field of {target.Class.Name}");
            }
        }
        return classes.Select(c => c with
        {
            Fields = c.Fields.Select(f =>
            {
                if (!HoldsRefs(f.Type))
                {
                    return f;
                }
                var annotation = annotations[$"{c.Name}.{f.Name}"]?.AsObject();
                var derived = f.Type.EndsWith(" ref", StringComparison.Ordinal) && f.HasDefault
                    && f.Default?.GetValueKind() == JsonValueKind.String && f.Default.GetValue<string>() == NullRef;
                return f with
                {
                    References = new SchemaReferenceRule(
                        annotation?["null_allowed"]?.GetValue<bool>() ?? derived,
                        annotation?["null_allowed_when"]?.GetValue<string>(),
                        annotation?["invalid_value"]?.GetValue<string>()),
                };
            }).ToList(),
        }).ToList();
    }

    private const string NullRef = "OpaqueRef:NULL";

    /// <summary>Whether a datamodel type is a reference or holds references (in a set, map or option).</summary>
    public static bool HoldsRefs(string type) => type.Split([' ', '(', ')'], StringSplitOptions.RemoveEmptyEntries).Contains("ref");

    private static SchemaClass ReadClass(JsonNode node) => new(
        node["name"]!.GetValue<string>(),
        node["description"]?.GetValue<string>() ?? "",
        node["lifecycle"]?.GetValue<string>() ?? "published",
        node["fields"]!.AsArray().Select(f => new SchemaField(
            f!["name"]!.GetValue<string>(),
            f["type"]!.GetValue<string>(),
            f["qualifier"]!.GetValue<string>(),
            f.AsObject().TryGetPropertyValue("default", out var dv) ? dv?.DeepClone() : null,
            f.AsObject().ContainsKey("default"),
            f["many_of"]?.GetValue<string>(),
            f["lifecycle"]?.GetValue<string>() ?? "published",
            f["description"]?.GetValue<string>() ?? "")).ToList(),
        node["messages"]!.AsArray().Select(m => new SchemaMessage(
            m!["name"]!.GetValue<string>(),
            m["session"]?.GetValue<bool>() ?? true,
            (m["params"]?.AsArray() ?? []).Select(p => new SchemaParam(
                p!["name"]!.GetValue<string>(),
                p["type"]!.GetValue<string>(),
                p["optional"]?.GetValue<bool>() ?? false,
                p["description"]?.GetValue<string>() ?? "")).ToList(),
            m["result"]?.GetValue<string>() ?? "void",
            (m["errors"]?.AsArray() ?? []).Select(e => e!.GetValue<string>()).ToList(),
            (m["roles"]?.AsArray() ?? []).Select(e => e!.GetValue<string>()).ToList(),
            m["implicit"]?.GetValue<string>() ?? "",
            m["generic"]?.GetValue<string>() ?? "",
            m["async"]?.GetValue<bool>() ?? false,
            m["internal"]?.GetValue<bool>() ?? false,
            m["lifecycle"]?.GetValue<string>() ?? "published",
            m["description"]?.GetValue<string>() ?? "")).ToList());

    public static readonly JsonSerializerOptions WriteOptions = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
