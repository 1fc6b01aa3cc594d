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
/// dump is the snapshot format: checksummed and layout-versioned, so a damaged or foreign
/// upload is refused before anything changes.
/// </summary>
public sealed class DatabaseDumpEndpoint(XapiDatabase database, SessionManager sessions, ILogger<DatabaseDumpEndpoint> logger)
{
    public const string Path = "/pool/xmldbdump";

    private const long MaxDumpBytes = 4L << 30;

    public async Task HandleAsync(HttpContext context)
    {
        if (!await HttpActionAuth.AuthorizeAsync(context, sessions, RoleSet.PoolAdmin))
        {
            return;
        }
        if (HttpMethods.IsGet(context.Request.Method))
        {
            var dump = JournalStore.EncodeSnapshot(database.Snapshot);
            context.Response.ContentType = "application/octet-stream";
            context.Response.Headers.ContentDisposition = "attachment; filename=\"xapi-db.dump\"";
            context.Response.ContentLength = dump.WrittenCount;
            await context.Response.Body.WriteAsync(dump.WrittenMemory, context.RequestAborted);
            return;
        }
        if (context.Request.ContentLength is > MaxDumpBytes)
        {
            await PlainAsync(context, StatusCodes.Status413PayloadTooLarge, "database dump too large");
            return;
        }
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        DatabaseDump restored;
        try
        {
            restored = JournalStore.ReadSnapshot(buffer.ToArray(), "the uploaded dump");
        }
        catch (DatabaseFormatException e)
        {
            await PlainAsync(context, StatusCodes.Status400BadRequest, e.Message.Replace("refusing to start", "refusing to restore", StringComparison.Ordinal));
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
