using System.Globalization;
using System.Text.Json.Nodes;

namespace Xapi.Codegen;

/// <summary>
/// Converts the published reference datamodel into the project's own schema format.
/// Run once when the reference changes; the repository builds from <c>schema/</c> alone.
/// </summary>
public static class SchemaImporter
{
    // The reference has no relation table; these are the one-to-many pairs whose "many"
    // side the server computes. Unambiguous pairs (exactly one back-pointer) are found
    // automatically; these settle the classes that point back with several fields.
    private static readonly Dictionary<string, string> ExplicitRelations = new()
    {
        ["VM.snapshots"] = "VM.snapshot_of",
        ["VM.children"] = "VM.parent",
        ["VM.VTPMs"] = "VTPM.VM",
        ["host.resident_VMs"] = "VM.resident_on",
        ["PIF.bond_master_of"] = "Bond.master",
        ["PIF.VLAN_slave_of"] = "VLAN.tagged_PIF",
        ["PIF.tunnel_access_PIF_of"] = "tunnel.access_PIF",
        ["PIF.tunnel_transport_PIF_of"] = "tunnel.transport_PIF",
        ["PIF.sriov_physical_PIF_of"] = "network_sriov.physical_PIF",
        ["PIF.sriov_logical_PIF_of"] = "network_sriov.logical_PIF",
        ["VDI.snapshots"] = "VDI.snapshot_of",
        ["PGPU.resident_VGPUs"] = "VGPU.resident_on",
    };

    // Errors whose published parameter list is empty although the real server sends
    // parameters (xapi_session.ml raises it with the user name and a reason).
    private static readonly Dictionary<string, string[]> ErrorParameterCorrections = new()
    {
        ["SESSION_AUTHENTICATION_FAILED"] = ["uname", "reason"],
    };

    public static void Import(string referenceDir, string schemaDir)
    {
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(referenceDir, "xenapi.json")))!.AsArray();
        var errorsRef = JsonNode.Parse(File.ReadAllText(Path.Combine(referenceDir, "xenapi-errors.json")))!.AsObject();
        var asyncRef = JsonNode.Parse(File.ReadAllText(Path.Combine(referenceDir, "xenapi-async.json")))!["messages"]!
            .AsArray().Select(n => n!.GetValue<string>()).ToHashSet(StringComparer.Ordinal);

        var classesDir = Path.Combine(schemaDir, "classes");
        if (Directory.Exists(classesDir))
        {
            Directory.Delete(classesDir, recursive: true);
        }
        Directory.CreateDirectory(classesDir);

        var fieldTypes = new Dictionary<string, List<(string Field, string Type)>>();
        foreach (var cls in reference)
        {
            fieldTypes[cls!["name"]!.GetValue<string>()] = cls["fields"]!.AsArray()
                .Select(f => (f!["name"]!.GetValue<string>(), f["type"]!.GetValue<string>())).ToList();
        }

        var enums = new SortedDictionary<string, JsonNode>(StringComparer.Ordinal);
        var classNames = new JsonArray();
        foreach (var cls in reference)
        {
            var name = cls!["name"]!.GetValue<string>();
            classNames.Add(name);
            foreach (var e in cls["enums"]!.AsArray())
            {
                var enumName = e!["name"]!.GetValue<string>();
                enums[enumName] = new JsonObject
                {
                    ["name"] = enumName,
                    ["values"] = new JsonArray(e["values"]!.AsArray()
                        .Select(v => (JsonNode)new JsonObject { ["name"] = v!["name"]!.GetValue<string>(), ["description"] = v["doc"]?.GetValue<string>() ?? "" })
                        .ToArray()),
                };
            }

            var fieldNames = cls["fields"]!.AsArray().Select(f => f!["name"]!.GetValue<string>()).ToHashSet();
            var fields = new JsonArray();
            foreach (var f in cls["fields"]!.AsArray())
            {
                var fieldName = f!["name"]!.GetValue<string>();
                var type = f["type"]!.GetValue<string>();
                var field = new JsonObject
                {
                    ["name"] = fieldName,
                    ["type"] = type,
                    ["qualifier"] = f["qualifier"]!.GetValue<string>(),
                };
                if (f["default"] is JsonNode dv)
                {
                    field["default"] = ConvertDefault(dv.GetValue<string>(), type);
                }
                var manyOf = FindRelation(name, fieldName, type, f["qualifier"]!.GetValue<string>(), fieldTypes);
                if (manyOf is not null)
                {
                    field["many_of"] = manyOf;
                }
                field["lifecycle"] = LifecycleState(f["lifecycle"]);
                field["description"] = f["description"]?.GetValue<string>() ?? "";
                fields.Add(field);
            }

            var messages = new JsonArray();
            var hasGetAllRecords = false;
            foreach (var m in cls["messages"]!.AsArray())
            {
                var msgName = m!["name"]!.GetValue<string>();
                // Messages live in our database, so their record accessors are the generic ones.
                var isImplicit = m["implicit"]!.GetValue<bool>()
                    || (name == "message" && msgName is "get_record" or "get_by_uuid" or "get_all" or "get_all_records" or "get_all_records_where");
                hasGetAllRecords |= msgName == "get_all_records";
                var allParams = m["params"]!.AsArray();
                var takesSession = allParams.Count > 0 && allParams[0]!["type"]!.GetValue<string>() == "session ref"
                    && allParams[0]!["name"]!.GetValue<string>() == "session_id";
                var message = new JsonObject { ["name"] = msgName };
                if (!takesSession)
                {
                    message["session"] = false;
                }
                message["params"] = new JsonArray(allParams.Skip(takesSession ? 1 : 0).Select(p =>
                {
                    var param = new JsonObject { ["name"] = p!["name"]!.GetValue<string>(), ["type"] = p["type"]!.GetValue<string>() };
                    if (!p["required"]!.GetValue<bool>())
                    {
                        param["optional"] = true;
                    }
                    param["description"] = p["doc"]?.GetValue<string>() ?? "";
                    return (JsonNode)param;
                }).ToArray());
                var result = m["result"]!.AsArray()[0]!.GetValue<string>();
                // event.from's result is described in prose; it is a struct of its own.
                message["result"] = result == "an event batch" ? "event_batch" : result;
                message["errors"] = new JsonArray(m["errors"]!.AsArray().Select(e => (JsonNode)JsonValue.Create(e!["name"]!.GetValue<string>())).ToArray());
                message["roles"] = new JsonArray(m["roles"]!.AsArray().Select(r => (JsonNode)JsonValue.Create(r!.GetValue<string>())).ToArray());
                if (isImplicit)
                {
                    message["implicit"] = ImplicitKind(msgName, fieldNames);
                }
                else if (GenericShape(msgName, allParams.Skip(takesSession ? 1 : 0).Select(p => p!["type"]!.GetValue<string>()).ToList(),
                             cls["fields"]!.AsArray()) is { } generic)
                {
                    // A custom message shaped like a field accessor (VM.set_VCPUs_max): it behaves
                    // like the generic one until the class implements its extra checks.
                    message["generic"] = generic;
                }
                if (asyncRef.Contains($"{name}.{msgName}") || (isImplicit && msgName is "create" or "destroy"))
                {
                    message["async"] = true;
                }
                message["lifecycle"] = LifecycleState(m["lifecycle"]);
                message["description"] = m["description"]?.GetValue<string>() ?? "";
                messages.Add(message);
            }

            var declared = messages.Select(n => n!["name"]!.GetValue<string>()).ToHashSet();
            if (hasGetAllRecords && !declared.Contains("get_all_records_where"))
            {
                messages.Add(WhereMessage("get_all_records_where", $"({name} ref -> {name} record) map", "get_all_records_where"));
            }
            if (hasGetAllRecords && !declared.Contains("get_all_where"))
            {
                messages.Add(WhereMessage("get_all_where", $"{name} ref set", "get_all_where"));
            }
            foreach (var extra in InternalMessages(name, cls))
            {
                messages.Add(extra);
            }

            var output = new JsonObject
            {
                ["name"] = name,
                ["description"] = cls["description"]?.GetValue<string>() ?? "",
                ["lifecycle"] = LifecycleState(cls["lifecycle"]),
                ["fields"] = fields,
                ["messages"] = messages,
            };
            File.WriteAllText(Path.Combine(classesDir, name + ".json"), output.ToJsonString(SchemaReader.WriteOptions) + "\n");
        }

        File.WriteAllText(Path.Combine(schemaDir, "enums.json"),
            new JsonArray(enums.Values.Select(v => v.DeepClone()).ToArray()).ToJsonString(SchemaReader.WriteOptions) + "\n");

        var errors = new JsonArray();
        foreach (var (code, info) in errorsRef.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var error = new JsonObject { ["code"] = code };
            error["params"] = ErrorParameterCorrections.TryGetValue(code, out var corrected)
                ? new JsonArray(corrected.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray())
                : info?["params"] is JsonArray ps ? ps.DeepClone() : null;
            error["description"] = info?["doc"]?.GetValue<string>() ?? "";
            errors.Add(error);
        }
        File.WriteAllText(Path.Combine(schemaDir, "errors.json"), errors.ToJsonString(SchemaReader.WriteOptions) + "\n");

        var api = new JsonObject
        {
            ["api_version_major"] = 2,
            ["api_version_minor"] = 21,
            ["classes"] = classNames,
        };
        File.WriteAllText(Path.Combine(schemaDir, "api.json"), api.ToJsonString(SchemaReader.WriteOptions) + "\n");
    }

    private static string LifecycleState(JsonNode? lifecycle) =>
        (lifecycle?["state"]?.GetValue<string>() ?? "Published_s") switch
        {
            "Published_s" => "published",
            "Deprecated_s" => "deprecated",
            "Removed_s" => "removed",
            "Prototyped_s" => "prototyped",
            var other => other,
        };

    private static string? FindRelation(string cls, string field, string type, string qualifier,
        Dictionary<string, List<(string Field, string Type)>> fieldTypes)
    {
        if (ExplicitRelations.TryGetValue($"{cls}.{field}", out var explicitRelation))
        {
            return explicitRelation;
        }
        if (qualifier == "RW" || !type.EndsWith(" ref set", StringComparison.Ordinal))
        {
            return null;
        }
        var target = type[..type.IndexOf(' ')];
        if (!fieldTypes.TryGetValue(target, out var targetFields) || target == cls)
        {
            return null;
        }
        var backPointers = targetFields.Where(f => f.Type == cls + " ref").ToList();
        return backPointers.Count == 1 ? $"{target}.{backPointers[0].Field}" : null;
    }

    private static string ImplicitKind(string message, HashSet<string> fields)
    {
        if (message is "get_record" or "get_by_uuid" or "get_by_name_label" or "get_all" or "get_all_records" or "get_all_records_where" or "get_all_where" or "create" or "destroy")
        {
            return message;
        }
        foreach (var prefix in new[] { "get_", "set_", "add_to_", "remove_from_", "add_", "remove_" })
        {
            if (message.StartsWith(prefix, StringComparison.Ordinal) && fields.Contains(message[prefix.Length..]))
            {
                return prefix.TrimEnd('_') + ":" + message[prefix.Length..];
            }
        }
        throw new InvalidOperationException($"Cannot classify implicit message {message}");
    }

    private static string? GenericShape(string message, List<string> paramTypes, JsonArray fields)
    {
        foreach (var prefix in new[] { "add_to_", "remove_from_", "set_", "add_", "remove_" })
        {
            if (!message.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }
            var fieldName = message[prefix.Length..];
            var type = fields.FirstOrDefault(f => f!["name"]!.GetValue<string>() == fieldName)?["type"]?.GetValue<string>();
            if (type is null)
            {
                continue;
            }
            // The parameters after "self" must be exactly what the generic accessor takes.
            var expected = prefix switch
            {
                "set_" => [type],
                "add_" or "remove_" when type.EndsWith(" set", StringComparison.Ordinal) => [type[..^4]],
                "add_to_" when type.StartsWith('(') && type.EndsWith(" map", StringComparison.Ordinal) => MapParts(type),
                "remove_from_" when type.StartsWith('(') && type.EndsWith(" map", StringComparison.Ordinal) => [MapParts(type)[0]],
                _ => null,
            };
            if (expected is not null && paramTypes.Count == expected.Count + 1 && paramTypes.Skip(1).SequenceEqual(expected))
            {
                return prefix.TrimEnd('_') + ":" + fieldName;
            }
        }
        return null;
    }

    private static List<string> MapParts(string type)
    {
        var inner = type[1..type.LastIndexOf(')')];
        var arrow = inner.IndexOf(" -> ", StringComparison.Ordinal);
        return [inner[..arrow], inner[(arrow + 4)..]];
    }

    private static JsonObject WhereMessage(string name, string result, string kind) => new()
    {
        ["name"] = name,
        ["params"] = new JsonArray(new JsonObject { ["name"] = "expr", ["type"] = "string", ["description"] = "expression representing records to fetch" }),
        ["result"] = result,
        ["errors"] = new JsonArray(),
        ["roles"] = new JsonArray("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only"),
        ["implicit"] = kind,
        ["internal"] = true,
        ["lifecycle"] = "published",
        ["description"] = "Return a map of records (or refs) of the objects matching the expression; undocumented but called by clients.",
    };

    // Internal messages clients and storage drivers call that the published datamodel omits.
    private static IEnumerable<JsonObject> InternalMessages(string cls, JsonNode node)
    {
        JsonObject Internal(string name, bool session, JsonArray parameters, string result, string description) => new()
        {
            ["name"] = name,
            ["session"] = session,
            ["params"] = parameters,
            ["result"] = result,
            ["errors"] = new JsonArray(),
            ["roles"] = new JsonArray("pool-admin"),
            ["internal"] = true,
            ["lifecycle"] = "published",
            ["description"] = description,
        };
        JsonObject Param(string name, string type) => new() { ["name"] = name, ["type"] = type, ["description"] = "" };

        switch (cls)
        {
            case "session":
                yield return Internal("slave_login", false, new JsonArray(Param("host", "host ref"), Param("psecret", "string")), "session ref",
                    "Log in a pool member to its master using the pool secret.");
                break;
            case "pool":
                var hello = Internal("hello", true, new JsonArray(Param("host_uuid", "string"), Param("host_address", "string")), "string",
                    "Called by a pool member on start-up to announce itself to the master.");
                yield return hello;
                var initialAuth = Internal("initial_auth", true, new JsonArray(), "string",
                    "Gives a host joining the pool the pool secret, after it logged in with the master's credentials.");
                initialAuth["roles"] = new JsonArray("pool-admin", "pool-operator");
                yield return initialAuth;
                break;
            case "VDI":
                var introduce = node["messages"]!.AsArray().First(m => m!["name"]!.GetValue<string>() == "introduce")!;
                var parameters = new JsonArray(introduce["params"]!.AsArray().Skip(1)
                    .Select(p => (JsonNode)Param(p!["name"]!.GetValue<string>(), p["type"]!.GetValue<string>())).ToArray());
                yield return Internal("db_introduce", true, parameters, "VDI ref",
                    "Create a VDI record for an existing disk without asking the storage driver (used by storage drivers).");
                yield return Internal("db_forget", true, new JsonArray(Param("vdi", "VDI ref")), "void",
                    "Remove a VDI record from the database without touching the disk (used by storage drivers).");
                break;
        }
    }

    /// <summary>Converts the datamodel's OCaml-style default literal into a typed JSON value.</summary>
    public static JsonNode? ConvertDefault(string literal, string type)
    {
        if (type.EndsWith(" option", StringComparison.Ordinal))
        {
            return literal == "Null" ? null : ConvertDefault(literal, type[..^" option".Length]);
        }
        if (type.EndsWith(" set", StringComparison.Ordinal))
        {
            var inner = type[..^" set".Length];
            var body = Unwrap(literal, '{', '}');
            return new JsonArray(SplitTopLevel(body).Select(item => ConvertDefault(item, inner)).ToArray());
        }
        if (type.StartsWith('(') && type.EndsWith(" map", StringComparison.Ordinal))
        {
            var arrow = type.IndexOf(" -> ", StringComparison.Ordinal);
            var valueType = type[(arrow + 4)..type.LastIndexOf(')')];
            var body = Unwrap(literal, '{', '}');
            var obj = new JsonObject();
            foreach (var pair in SplitTopLevel(body))
            {
                var sep = pair.IndexOf(" -> ", StringComparison.Ordinal);
                obj[Unquote(pair[..sep].Trim())] = ConvertDefault(pair[(sep + 4)..].Trim(), valueType);
            }
            return obj;
        }
        if (type.EndsWith(" ref", StringComparison.Ordinal))
        {
            return literal == "Null" ? "OpaqueRef:NULL" : Unquote(literal);
        }
        return type switch
        {
            "int" => long.Parse(literal, CultureInfo.InvariantCulture),
            "float" => double.Parse(literal.EndsWith('.') ? literal + "0" : literal, CultureInfo.InvariantCulture),
            "bool" => bool.Parse(literal),
            _ => Unquote(literal),
        };
    }

    private static string Unwrap(string literal, char open, char close) =>
        literal.Length >= 2 && literal[0] == open && literal[^1] == close ? literal[1..^1].Trim() : literal.Trim();

    private static string Unquote(string literal) =>
        literal.Length >= 2 && literal[0] == '"' && literal[^1] == '"' ? literal[1..^1] : literal;

    private static IEnumerable<string> SplitTopLevel(string body)
    {
        if (body.Length == 0)
        {
            yield break;
        }
        var depth = 0;
        var inString = false;
        var start = 0;
        for (var i = 0; i < body.Length; i++)
        {
            var c = body[i];
            if (c == '"')
            {
                inString = !inString;
            }
            else if (!inString && c is '{' or '(')
            {
                depth++;
            }
            else if (!inString && c is '}' or ')')
            {
                depth--;
            }
            else if (!inString && depth == 0 && c is ',' or ';')
            {
                yield return body[start..i].Trim();
                start = i + 1;
            }
        }
        yield return body[start..].Trim();
    }
}
