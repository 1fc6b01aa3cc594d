using System.Globalization;

namespace Xapi.Codegen;

/// <summary>How datamodel types become C# types, and how values cross between the two.</summary>
public static partial class Generator
{
    /// <summary>The element of a set as typed code sees it; null when sets of it stay untyped.</summary>
    private static string? SetElementClr(string elementType) => ParseType(elementType) switch
    {
        ("string", _) => "string",
        ("int", _) => "long",
        ("enum", var n) => EnumTypeName(n!),
        ("ref", var n) => Pascal(n!) + "Ref",
        _ => null,
    };

    private static string ClrType(string type)
    {
        var t = ParseType(type);
        return t switch
        {
            ("string", _) => "string",
            ("int", _) => "long",
            ("float", _) => "double",
            ("bool", _) => "bool",
            ("datetime", _) => "DateTime",
            ("enum", var n) => EnumTypeName(n!),
            ("ref", var n) => Pascal(n!) + "Ref",
            ("set", _) => SetElementClr(type[..^4]) is { } element ? $"IReadOnlyList<{element}>" : "IReadOnlyList<object?>",
            ("map", _) or ("record", _) or ("event_batch", _) => "ValueMap",
            _ => "object?",
        };
    }

    /// <summary>An expression turning the canonical runtime value <paramref name="expr"/> into <see cref="ClrType"/>.</summary>
    private static string FromRuntime(string type, string expr)
    {
        var t = ParseType(type);
        switch (t)
        {
            case ("string", _): return $"(string){expr}!";
            case ("int", _): return $"(long){expr}!";
            case ("float", _): return $"(double){expr}!";
            case ("bool", _): return $"(bool){expr}!";
            case ("datetime", _): return $"(DateTime){expr}!";
            case ("enum", var n): return $"{EnumTypeName(n!)}Wire.Parse((string){expr}!)";
            case ("ref", var n): return $"new {Pascal(n!)}Ref((string){expr}!)";
            case ("map", _) or ("record", _) or ("event_batch", _): return $"(ValueMap){expr}!";
            case ("set", _):
                var element = type[..^4];
                return ParseType(element) switch
                {
                    ("string", _) => $"Typed.Strings({expr})",
                    ("int", _) => $"Typed.Longs({expr})",
                    ("enum", var n) => $"Typed.Enums({expr}, {EnumTypeName(n!)}Wire.Parse)",
                    ("ref", var n) => $"Typed.Refs({expr}, static s => new {Pascal(n!)}Ref(s))",
                    _ => $"(IReadOnlyList<object?>){expr}!",
                };
            default: return expr;
        }
    }

    /// <summary>An expression turning a typed value back into the canonical runtime value.</summary>
    private static string ToRuntime(string type, string expr)
    {
        var t = ParseType(type);
        switch (t)
        {
            case ("enum", _): return $"{expr}.ToWire()";
            case ("ref", _): return $"{expr}.Value";
            case ("set", _):
                var element = type[..^4];
                return ParseType(element) switch
                {
                    ("string", _) => $"Typed.ToRuntime({expr}, static s => s)",
                    ("int", _) => $"Typed.ToRuntime({expr}, static l => l)",
                    ("enum", _) => $"Typed.ToRuntime({expr}, static e => e.ToWire())",
                    ("ref", _) => $"Typed.ToRuntime({expr}, static r => r.Value)",
                    _ => expr,
                };
            default: return expr;
        }
    }

    /// <summary>The result adapter of a handler call: typed result to runtime value, boxed.</summary>
    private static string ResultAdapter(string type, string call) => type switch
    {
        "void" => $"ApiResults.Void({call})",
        _ => $"ApiResults.Of({call}, static r => {ToRuntimeBoxed(type, "r")})",
    };

    private static string ToRuntimeBoxed(string type, string expr)
    {
        var runtime = ToRuntime(type, expr);
        return runtime == expr ? $"(object?){expr}" : runtime;
    }

    private static string ResultType(string type) => type == "void" ? "ValueTask" : $"ValueTask<{ClrType(type)}>";

    private static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);
}
