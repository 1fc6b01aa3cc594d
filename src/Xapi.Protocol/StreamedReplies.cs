using System.Buffers;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>
/// Where a reply is encoded when it may be too large to hold: between the elements of the
/// containers near its top the encoder calls <see cref="CheckpointAsync"/>, where the writer can
/// send what it holds and wait for the client to take it.
/// </summary>
public interface IReplyWriter : IBufferWriter<byte>
{
    ValueTask CheckpointAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Success replies written element by element, byte for byte as <see cref="XmlRpcWriter.WriteSuccess"/>
/// and <see cref="JsonRpc.WriteSuccess"/> write them. The lists and maps in the top
/// <see cref="StreamedLevels"/> levels of a value (a result map, its events, each event) go out an
/// element at a time; anything deeper (a record, a snapshot) is written whole, its size bounded by
/// what one row can hold.
/// </summary>
public static class StreamedReplies
{
    public const int StreamedLevels = 3;

    public static async ValueTask WriteXmlRpcSuccessAsync(IReplyWriter output, object? value, CancellationToken cancellationToken)
    {
        output.Write(XmlRpcWriter.ResponseStart);
        output.Write("<member><name>Status</name><value>Success</value></member><member><name>Value</name>"u8);
        await WriteXmlAsync(output, value, StreamedLevels, cancellationToken).ConfigureAwait(false);
        output.Write("</member>"u8);
        output.Write(XmlRpcWriter.ResponseEnd);
    }

    public static async ValueTask WriteJsonRpcSuccessAsync(IReplyWriter output, RpcRequest request, object? value, CancellationToken cancellationToken)
    {
        var v2 = request.Dialect == RpcDialect.JsonRpcV2;
        output.Write(v2 ? "{\"jsonrpc\":\"2.0\",\"result\":"u8 : "{\"result\":"u8);
        await WriteJsonAsync(output, value, 1, StreamedLevels, cancellationToken).ConfigureAwait(false);
        output.Write(v2 ? ",\"id\":"u8 : ",\"error\":null,\"id\":"u8);
        output.Write(request.JsonId.Span);
        output.Write("}"u8);
    }

    // The containers the writers take apart, in the order their switches test them; a record is
    // a leaf here.
    private static bool IsContainer(object? value) =>
        value is not RecordValue && value is ValueMap or object?[] or IEnumerable<KeyValuePair<string, object?>> or IReadOnlyList<object?>;

    private static async ValueTask WriteXmlAsync(IReplyWriter output, object? value, int levels, CancellationToken cancellationToken)
    {
        if (levels == 0 || !IsContainer(value))
        {
            XmlRpcWriter.WriteValue(output, value);
            return;
        }
        switch (value)
        {
            case ValueMap map:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in map)
                {
                    await WriteXmlMemberAsync(output, k as string ?? XType.ToDisplayString(k), v, levels, cancellationToken).ConfigureAwait(false);
                }
                output.Write("</struct></value>"u8);
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                output.Write("<value><struct>"u8);
                foreach (var (k, v) in dict)
                {
                    await WriteXmlMemberAsync(output, k, v, levels, cancellationToken).ConfigureAwait(false);
                }
                output.Write("</struct></value>"u8);
                break;
            case IReadOnlyList<object?> list:
                output.Write("<value><array><data>"u8);
                for (var i = 0; i < list.Count; i++)
                {
                    await WriteXmlAsync(output, list[i], levels - 1, cancellationToken).ConfigureAwait(false);
                    await output.CheckpointAsync(cancellationToken).ConfigureAwait(false);
                }
                output.Write("</data></array></value>"u8);
                break;
        }
    }

    private static async ValueTask WriteXmlMemberAsync(IReplyWriter output, string name, object? value, int levels, CancellationToken cancellationToken)
    {
        output.Write("<member><name>"u8);
        XmlRpcWriter.WriteEscaped(output, name);
        output.Write("</name>"u8);
        await WriteXmlAsync(output, value, levels - 1, cancellationToken).ConfigureAwait(false);
        output.Write("</member>"u8);
        await output.CheckpointAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async ValueTask WriteJsonAsync(IReplyWriter output, object? value, int depth, int levels, CancellationToken cancellationToken)
    {
        if (levels == 0 || !IsContainer(value))
        {
            JsonRpc.WriteValue(output, value, depth);
            return;
        }
        switch (value)
        {
            case ValueMap map:
                output.Write("{"u8);
                var first = true;
                foreach (var (k, v) in map)
                {
                    await WriteJsonMemberAsync(output, k as string ?? XType.ToDisplayString(k), v, depth, levels, first, cancellationToken).ConfigureAwait(false);
                    first = false;
                }
                output.Write("}"u8);
                break;
            case IEnumerable<KeyValuePair<string, object?>> dict:
                output.Write("{"u8);
                first = true;
                foreach (var (k, v) in dict)
                {
                    await WriteJsonMemberAsync(output, k, v, depth, levels, first, cancellationToken).ConfigureAwait(false);
                    first = false;
                }
                output.Write("}"u8);
                break;
            case IReadOnlyList<object?> list:
                output.Write("["u8);
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                    {
                        output.Write(","u8);
                    }
                    await WriteJsonAsync(output, list[i], depth + 1, levels - 1, cancellationToken).ConfigureAwait(false);
                    await output.CheckpointAsync(cancellationToken).ConfigureAwait(false);
                }
                output.Write("]"u8);
                break;
        }
    }

    private static async ValueTask WriteJsonMemberAsync(IReplyWriter output, string name, object? value, int depth, int levels, bool first, CancellationToken cancellationToken)
    {
        if (!first)
        {
            output.Write(","u8);
        }
        JsonRpc.WriteString(output, name);
        output.Write(":"u8);
        await WriteJsonAsync(output, value, depth + 1, levels - 1, cancellationToken).ConfigureAwait(false);
        await output.CheckpointAsync(cancellationToken).ConfigureAwait(false);
    }
}
