using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Server.Hosting;
using Xapi.Server.Sessions;

namespace Xapi.Server.Http;

/// <summary>
/// <c>GET /pool/xmldbdump</c> sends the whole pool database; <c>PUT /pool/xmldbdump</c> replaces
/// it with a dump (what <c>xe pool-dump-database</c> / <c>pool-restore-database</c> do). The
/// dump is the snapshot format: checksummed and layout-versioned. An upload is read whole,
/// within <see cref="ServerOptions.MaxDumpBytes"/>, decoded, and checked against the
/// datamodel and this host's identity before anything changes; then it replaces every
/// persistent row in one transaction. A refusal is an HTTP 4xx with a one-line reason.
/// </summary>
public sealed class DatabaseDumpEndpoint(XapiDatabase database, SessionManager sessions, ServerOptions options, ILogger<DatabaseDumpEndpoint> logger)
{
    public const string Path = "/pool/xmldbdump";

    private readonly SemaphoreSlim _restoring = new(1, 1);

    public async Task HandleAsync(HttpContext context)
    {
        if (!await HttpActionAuth.AuthorizeAsync(context, sessions, RoleSet.PoolAdmin))
        {
            return;
        }
        if (HttpMethods.IsGet(context.Request.Method))
        {
            var dump = JournalStore.EncodeRestorableDump(database.Snapshot);
            context.Response.ContentType = "application/octet-stream";
            context.Response.Headers.ContentDisposition = "attachment; filename=\"xapi-db.dump\"";
            context.Response.ContentLength = dump.WrittenCount;
            await context.Response.Body.WriteAsync(dump.WrittenMemory, context.RequestAborted);
            return;
        }
        // One restore at a time: each holds a whole dump in memory, so concurrent uploads would
        // multiply what MaxDumpBytes bounds.
        if (!_restoring.Wait(0))
        {
            await RefuseAsync(context, StatusCodes.Status503ServiceUnavailable, "another database restore is in progress; refusing to restore");
            return;
        }
        try
        {
            await RestoreAsync(context);
        }
        finally
        {
            _restoring.Release();
        }
    }

    private async Task RestoreAsync(HttpContext context)
    {
        byte[]? body;
        try
        {
            body = await ReadBodyAsync(context);
        }
        catch (BadHttpRequestException e)
        {
            await RefuseAsync(context, e.StatusCode, $"the upload is not a well-formed HTTP body ({e.Message}); refusing to restore");
            return;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException && context.RequestAborted.IsCancellationRequested)
        {
            // The client went away mid-upload: nobody to answer, nothing changed.
            return;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            logger.LogError(e, "Could not spool a database dump upload in {DataDir}", options.DataDir);
            await RefuseAsync(context, StatusCodes.Status507InsufficientStorage, "the upload could not be stored while it was read; refusing to restore");
            return;
        }
        if (body is null)
        {
            return;
        }
        DatabaseDump restored;
        try
        {
            restored = JournalStore.ReadSnapshot(body, "the uploaded dump");
            body = null;
            DumpValidator.Validate(restored);
        }
        catch (DatabaseFormatException e)
        {
            await RefuseAsync(context, StatusCodes.Status400BadRequest, e.Message.Replace("refusing to start", "refusing to restore", StringComparison.Ordinal));
            return;
        }
        // Real hosts adopt another host's database by rewriting its master into themselves
        // (uuid, control domain, PIF MACs) and restarting. Here a host's identity is its ref,
        // derived from the installation uuid and held by every session and task, so a dump
        // without this host would leave session.get_this_host pointing nowhere: refused.
        if (DumpValidator.IdentityProblem(restored, sessions.ThisHost) is { } foreign)
        {
            await RefuseAsync(context, StatusCodes.Status409Conflict, foreign + "; refusing to restore");
            return;
        }
        // As on real hosts, dry_run=true checks a dump without restoring it.
        if (context.Request.Query["dry_run"] == "true")
        {
            await PlainAsync(context, StatusCodes.Status200OK, $"the dump is valid: {restored.Rows.Count} rows; nothing changed (dry run)");
            return;
        }
        var generation = database.Write(tx =>
        {
            foreach (var cls in ApiSchema.Classes.Where(c => c.IsStored && !XapiDatabase.IsTransient(c)))
            {
                foreach (var row in tx.All(cls).ToList())
                {
                    tx.Delete(cls, row.Ref);
                }
            }
            foreach (var row in restored.Rows.Where(r => !XapiDatabase.IsTransient(r.Class)))
            {
                tx.Create(row.Class, row.Ref, row.Values);
            }
            return tx.Generation;
        });
        await database.WhenVisibleAsync(generation, context.RequestAborted);
        logger.LogWarning("Pool database replaced from a dump: {Rows} rows", restored.Rows.Count);
        await PlainAsync(context, StatusCodes.Status200OK, $"restored {restored.Rows.Count} rows");
    }

    /// <summary>The request body, or null when it is refused (the reply is then written).</summary>
    private async Task<byte[]?> ReadBodyAsync(HttpContext context)
    {
        var limit = options.MaxDumpBytes;
        var request = context.Request;
        if (request.ContentLength is { } length)
        {
            if (length > limit)
            {
                await RefuseTooLargeAsync(context, limit);
                return null;
            }
            var exact = new byte[length];
            await request.Body.ReadExactlyAsync(exact, context.RequestAborted);
            return exact;
        }
        // Chunked: the size is known only at the end. Spooled to a file, not to a growing
        // buffer, so an upload costs one copy-buffer of memory until it is known to fit; the
        // file is unlinked as soon as it is open, so a crash leaves nothing behind, and it is
        // in the data dir, readable only by the daemon, because a dump holds the pool's secrets.
        var spoolPath = System.IO.Path.Combine(options.DataDir, $"xmldbdump-{Guid.NewGuid():N}.spool");
        var spoolOptions = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            Options = FileOptions.Asynchronous | FileOptions.DeleteOnClose,
            BufferSize = 0,
        };
        if (!OperatingSystem.IsWindows())
        {
            spoolOptions.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        await using var spool = new FileStream(spoolPath, spoolOptions);
        if (!OperatingSystem.IsWindows())
        {
            File.Delete(spoolPath);
        }
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 16);
        try
        {
            long total = 0;
            int read;
            while ((read = await request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
            {
                total += read;
                if (total > limit)
                {
                    await RefuseTooLargeAsync(context, limit);
                    return null;
                }
                await spool.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted);
            }
            var whole = new byte[total];
            spool.Position = 0;
            await spool.ReadExactlyAsync(whole, context.RequestAborted);
            return whole;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static Task RefuseTooLargeAsync(HttpContext context, long limit) =>
        RefuseAsync(context, StatusCodes.Status413PayloadTooLarge,
            $"the database dump is larger than the limit of {limit} bytes (MaxDumpBytes); refusing to restore");

    // The rest of an unread body is not drained: the connection closes after the reply.
    private static Task RefuseAsync(HttpContext context, int status, string reason)
    {
        context.Response.Headers.Connection = "close";
        return PlainAsync(context, status, reason);
    }

    private static async Task PlainAsync(HttpContext context, int status, string text)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(text + "\n", context.RequestAborted);
    }
}

/// <summary>
/// Authentication for HTTP actions, as real hosts take it: a <c>session_id</c> in the query
/// string or a cookie, or HTTP Basic credentials.
/// </summary>
public static class HttpActionAuth
{
    public static async Task<bool> AuthorizeAsync(HttpContext context, SessionManager sessions, RoleSet required)
    {
        var sessionRef = context.Request.Query["session_id"].FirstOrDefault() ?? context.Request.Cookies["session_id"];
        string? temporary = null;
        try
        {
            if (sessionRef is null && context.Request.Headers.Authorization.FirstOrDefault() is { } header
                && header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
            {
                var credentials = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
                var colon = credentials.IndexOf(':');
                sessionRef = temporary = await sessions.LoginAsync(credentials[..Math.Max(colon, 0)], credentials[(colon + 1)..], "http-basic", context.Connection.RemoteIpAddress, context.RequestAborted);
            }
            var session = sessions.Validate(sessionRef);
            if (!Roles.All.Any(r => (r.Role & (required | RoleSet.PoolAdmin)) != 0 && session.May(r.Name)))
            {
                context.Response.StatusCode = StatusCodes.Status403Forbidden;
                return false;
            }
            return true;
        }
        catch (Exception e) when (e is XenApiException or FormatException)
        {
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = "Basic realm=\"xapi\"";
            return false;
        }
        finally
        {
            if (temporary is not null)
            {
                context.Response.OnCompleted(() =>
                {
                    sessions.Logout(temporary);
                    return Task.CompletedTask;
                });
            }
        }
    }
}
