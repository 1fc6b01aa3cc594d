namespace Xapi.Model;

/// <summary>
/// Adapts a handler's typed result to the runtime value the encoders write. Handlers that
/// finish synchronously cost no extra state machine.
/// </summary>
public static class ApiResults
{
    public static ValueTask<object?> Void(ValueTask call)
    {
        if (call.IsCompletedSuccessfully)
        {
            call.GetAwaiter().GetResult();
            return new ValueTask<object?>((object?)null);
        }
        return Await(call);

        static async ValueTask<object?> Await(ValueTask call)
        {
            await call.ConfigureAwait(false);
            return null;
        }
    }

    public static ValueTask<object?> Of<T>(ValueTask<T> call, Func<T, object?> toRuntime)
    {
        if (call.IsCompletedSuccessfully)
        {
            return new ValueTask<object?>(toRuntime(call.Result));
        }
        return Await(call, toRuntime);

        static async ValueTask<object?> Await(ValueTask<T> call, Func<T, object?> toRuntime) =>
            toRuntime(await call.ConfigureAwait(false));
    }
}

/// <summary>Conversions between runtime sets (<c>object?</c> lists) and typed lists, used by generated code.</summary>
public static class Typed
{
    public static IReadOnlyList<string> Strings(object? set) => Convert(set, static v => (string)v!);

    public static IReadOnlyList<long> Longs(object? set) => Convert(set, static v => (long)v!);

    public static IReadOnlyList<TEnum> Enums<TEnum>(object? set, Func<string, TEnum> parse) => Convert(set, v => parse((string)v!));

    public static IReadOnlyList<TRef> Refs<TRef>(object? set, Func<string, TRef> wrap) => Convert(set, v => wrap((string)v!));

    public static IReadOnlyList<object?> ToRuntime<T>(IReadOnlyList<T> list, Func<T, object?> convert)
    {
        var result = new object?[list.Count];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = convert(list[i]);
        }
        return result;
    }

    private static IReadOnlyList<T> Convert<T>(object? set, Func<object?, T> convert)
    {
        var list = (IReadOnlyList<object?>)set!;
        var result = new T[list.Count];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = convert(list[i]);
        }
        return result;
    }
}
