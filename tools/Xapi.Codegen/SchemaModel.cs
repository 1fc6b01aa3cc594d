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
    string Description);

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
        return new Schema(classes, enums, errors,
            order["api_version_major"]!.GetValue<int>(), order["api_version_minor"]!.GetValue<int>());
    }

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
