namespace Xapi.Protocol;

public enum RpcDialect
{
    XmlRpc,
    JsonRpcV1,
    JsonRpcV2,
}

/// <summary>
/// A decoded call. Parameters are wire values: string, long, double, bool, DateTime, byte[],
/// null, <see cref="IReadOnlyList{T}"/> of object, or string-keyed <see cref="IReadOnlyDictionary{TKey,TValue}"/>.
/// </summary>
public sealed record RpcRequest(string MethodName, IReadOnlyList<object?> Params, RpcDialect Dialect, ReadOnlyMemory<byte> JsonId);

/// <summary>The request could not be parsed as a call at all (an HTTP-level error, not a XenAPI one).</summary>
public sealed class RpcFormatException(string message, Exception? inner = null) : Exception(message, inner);

public sealed record RpcLimits(int MaxBodyBytes = 300 * 1024, int MaxDepth = 64)
{
    public static readonly RpcLimits Default = new();

    /// <summary>Replies up to this size are held and sent with a length; larger ones are streamed as they are encoded.</summary>
    public long MaxBufferedReplyBytes { get; init; } = 1 << 20;
}
