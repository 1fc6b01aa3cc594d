using System.Buffers;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xapi.Protocol;
using Xapi.Server.Hosting;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Http;

/// <summary>
/// The RPC paths over HTTP: <c>POST /jsonrpc</c> for JSON-RPC and any other POST for XML-RPC.
/// Bodies are bounded; unparseable requests get an HTTP error, API errors a <c>Failure</c>.
/// </summary>
public sealed class RpcEndpoint(Dispatcher dispatcher, RpcLimits limits, ServerOptions options, Pool.PoolSecret poolSecret, Pool.PoolMembership membership,
    ILogger<RpcEndpoint> logger)
{
    // How long a forwarded call waits for this member's copy to reach the point it was sent at.
    private static readonly TimeSpan ForwardedCatchUpPatience = TimeSpan.FromSeconds(10);

    private readonly LogRateLimit _rejectLog = new(options.UnauthenticatedLogLinesPerMinute, TimeSpan.FromMinutes(1));

    public async Task HandleAsync(HttpContext context)
    {
        var response = context.Response;
        response.Headers.AccessControlAllowOrigin = "*";
        var isJson = context.Request.Path.Equals("/jsonrpc", StringComparison.OrdinalIgnoreCase);

        if (context.Request.ContentLength is long declared && declared > limits.MaxBodyBytes)
        {
            await RejectAsync(context, StatusCodes.Status413PayloadTooLarge, $"request body of {declared} bytes exceeds the limit of {limits.MaxBodyBytes}");
            return;
        }
        ReadOnlyMemory<byte>? read;
        try
        {
            read = await ReadBodyAsync(context.Request.Body, limits.MaxBodyBytes, context.RequestAborted);
        }
        catch (Exception e) when (e is BadHttpRequestException or IOException)
        {
            // Kestrel's chunked decoder reports bad framing as BadHttpRequestException, but a chunk
            // size past 2^63 as a plain IOException; either is the client's fault, not ours, so it
            // gets a 400 and one line, not an unhandled exception and a stack trace.
            await RejectMalformedBodyAsync(context, e.Message);
            return;
        }
        if (read is not { } body)
        {
            await RejectAsync(context, StatusCodes.Status413PayloadTooLarge, $"request body exceeds the limit of {limits.MaxBodyBytes} bytes");
            return;
        }

        RpcRequest request;
        try
        {
            request = isJson ? JsonRpc.ReadCall(body, limits) : XmlRpcReader.ReadCall(body, limits);
        }
        catch (RpcFormatException e)
        {
            // Real servers answer a request they cannot parse with HTTP 500.
            if (_rejectLog.TryEnter(out var suppressed))
            {
                logger.LogInformation("Rejected unparseable {Dialect} request from {Remote}: {Reason}; {Suppressed} earlier rejections not logged",
                    isJson ? "JSON-RPC" : "XML-RPC", context.Connection.RemoteIpAddress, e.Message, suppressed);
            }
            await RejectAsync(context, StatusCodes.Status500InternalServerError, e.Message);
            return;
        }

        var fromPool = context.Request.Cookies[Pool.PoolSecret.CookieName] is { } secret && poolSecret.Matches(secret);
        if (fromPool)
        {
            await membership.CatchUpToAsync(context.Request.Headers[Operations.Forwarder.PoolPositionHeader].ToString(), ForwardedCatchUpPatience, context.RequestAborted);
        }
        var (result, error) = await dispatcher.InvokeAsync(request, context.RequestAborted, LocalPeer.Of(context)?.IsRoot == true,
            context.Connection.RemoteIpAddress, fromPool);
        response.ContentType = isJson ? "application/json" : "text/xml";
        using var output = new StreamedReply(response, limits.MaxBufferedReplyBytes);
        if (isJson)
        {
            if (error is null)
            {
                await StreamedReplies.WriteJsonRpcSuccessAsync(output, request, result, context.RequestAborted);
            }
            else
            {
                JsonRpc.WriteFailure(output, request, error);
            }
        }
        else
        {
            if (error is null && Dispatcher.IsListMethods(request))
            {
                // Real servers answer this one call with the bare array, and Python's
                // xmlrpc.client ServerProxy expects exactly that.
                XmlRpcWriter.WriteBareResult(output, result);
            }
            else if (error is null)
            {
                await StreamedReplies.WriteXmlRpcSuccessAsync(output, result, context.RequestAborted);
            }
            else
            {
                XmlRpcWriter.WriteFailure(output, error.Description);
            }
        }
        await output.CompleteAsync(context.RequestAborted);
    }

    public static Task PreflightAsync(HttpContext context)
    {
        var headers = context.Response.Headers;
        headers.AccessControlAllowOrigin = "*";
        headers.AccessControlAllowMethods = "POST, OPTIONS";
        headers.AccessControlAllowHeaders = context.Request.Headers.AccessControlRequestHeaders.Count > 0
            ? context.Request.Headers.AccessControlRequestHeaders.ToString()
            : "Content-Type";
        headers.AccessControlMaxAge = "86400";
        context.Response.StatusCode = StatusCodes.Status200OK;
        return Task.CompletedTask;
    }

    private async Task RejectMalformedBodyAsync(HttpContext context, string reason)
    {
        if (context.RequestAborted.IsCancellationRequested)
        {
            return; // The client went away mid-body: nobody to answer.
        }
        if (_rejectLog.TryEnter(out var suppressed))
        {
            logger.LogInformation("Rejected a malformed request body from {Remote}: {Reason}; {Suppressed} earlier rejections not logged",
                context.Connection.RemoteIpAddress, reason, suppressed);
        }
        // The rest of the stream cannot be framed, so the connection cannot carry another request.
        context.Response.Headers.Connection = "close";
        try
        {
            await RejectAsync(context, StatusCodes.Status400BadRequest, "malformed request body: " + reason);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            // The connection broke while answering; nothing more to tell anyone.
        }
    }

    private static async Task RejectAsync(HttpContext context, int status, string reason)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(reason + "\n", context.RequestAborted);
    }

    // Returns null when the body is larger than the limit; never buffers more than limit + 1 bytes.
    private static async Task<ReadOnlyMemory<byte>?> ReadBodyAsync(Stream body, int limit, CancellationToken cancellationToken)
    {
        var buffer = new byte[Math.Min(limit + 1, 16 * 1024)];
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                if (buffer.Length > limit)
                {
                    return null;
                }
                Array.Resize(ref buffer, Math.Min(buffer.Length * 2, limit + 1));
            }
            var n = await body.ReadAsync(buffer.AsMemory(length), cancellationToken);
            if (n == 0)
            {
                return buffer.AsMemory(0, length);
            }
            length += n;
            if (length > limit)
            {
                return null;
            }
        }
    }
}
