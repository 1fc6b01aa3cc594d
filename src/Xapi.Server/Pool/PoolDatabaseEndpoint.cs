using System.Globalization;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Database.Replication;
using Xapi.Server.Hosting;

namespace Xapi.Server.Pool;

/// <summary>
/// The master's database as members reach it: <c>GET /pool/db/changes</c> answers what changed
/// after a member's point (waiting for a change up to a bound), <c>POST /pool/db/commit</c>
/// commits a member's write. Only with the pool secret as the <c>pool_secret</c> cookie, and only
/// on the master (a member answers 503: it holds a copy, not the pool's database).
/// </summary>
public sealed class PoolDatabaseEndpoint(XapiDatabase database, PoolSecret secret, MemberLiveness liveness, ServerOptions options,
    IHostApplicationLifetime lifetime, ILogger<PoolDatabaseEndpoint> logger)
{
    public const string ChangesPath = "/pool/db/changes";
    public const string CommitPath = "/pool/db/commit";
    public const string EpochParameter = "epoch";
    public const string SinceParameter = "since";
    public const string WaitParameter = "wait";
    public const string HostParameter = "host";

    /// <summary>The longest a member's request for changes is held open when nothing changes.</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(60);

    public static bool Serves(HttpRequest request) =>
        (request.Path == ChangesPath && HttpMethods.IsGet(request.Method)) || (request.Path == CommitPath && HttpMethods.IsPost(request.Method));

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        if (!secret.Matches(request.Cookies[PoolSecret.CookieName]))
        {
            logger.LogWarning("Refused {Path} from {Source}: no valid pool secret", request.Path.Value, context.Connection.RemoteIpAddress);
            await RefuseAsync(context, StatusCodes.Status403Forbidden, "the pool secret is missing or wrong");
            return;
        }
        if (database.FollowsMaster)
        {
            await RefuseAsync(context, StatusCodes.Status503ServiceUnavailable, "this host is a pool member, not the master");
            return;
        }
        var epoch = request.Query[EpochParameter].ToString();
        if (!long.TryParse(request.Query[SinceParameter], NumberStyles.None, CultureInfo.InvariantCulture, out var since))
        {
            await RefuseAsync(context, StatusCodes.Status400BadRequest, $"'{SinceParameter}' must be a generation");
            return;
        }
        byte[] reply;
        if (request.Path == ChangesPath)
        {
            var wait = long.TryParse(request.Query[WaitParameter], NumberStyles.None, CultureInfo.InvariantCulture, out var ms)
                ? TimeSpan.FromMilliseconds(Math.Min(ms, (long)MaxWait.TotalMilliseconds))
                : TimeSpan.Zero;
            ReplicaDelta delta;
            // A member always has one of these open, or is about to: that is its heartbeat.
            using var heartbeat = request.Query[HostParameter].ToString() is { Length: > 0 } member ? liveness.Heard(member) : null;
            // A held request ends when the daemon stops, rather than holding up its stop.
            using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping);
            try
            {
                delta = await database.ChangesAsync(epoch, since, wait, ended.Token);
            }
            catch (OperationCanceledException) when (ended.IsCancellationRequested)
            {
                if (context.RequestAborted.IsCancellationRequested)
                {
                    return;
                }
                delta = database.ChangesSince(epoch, since);
            }
            reply = ReplicationCodec.EncodeDelta(delta);
        }
        else
        {
            IReadOnlyList<RowChange> changes;
            try
            {
                changes = ReplicationCodec.DecodeChanges(await ReadBodyAsync(context));
            }
            catch (Exception e) when (e is FormatException or InvalidDataException)
            {
                await RefuseAsync(context, StatusCodes.Status400BadRequest, $"the changes cannot be read: {e.Message}");
                return;
            }
            reply = ReplicationCodec.EncodeCommitReply(await database.CommitFromMemberAsync(changes, epoch, since, context.RequestAborted));
        }
        context.Response.ContentType = "application/octet-stream";
        context.Response.ContentLength = reply.Length;
        await context.Response.Body.WriteAsync(reply, context.RequestAborted);
    }

    private async Task<byte[]> ReadBodyAsync(HttpContext context)
    {
        // A member's write is one transaction: bounded as a dump is.
        var limit = options.MaxDumpBytes;
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                throw new InvalidDataException($"more than {limit} bytes");
            }
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    private static Task RefuseAsync(HttpContext context, int status, string reason)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        return context.Response.WriteAsync(reason + "\n");
    }
}
