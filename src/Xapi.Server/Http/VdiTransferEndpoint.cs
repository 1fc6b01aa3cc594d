using System.Buffers;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Api;
using Xapi.Server.Sessions;
using Xapi.Server.Tasks;
using Xapi.Storage;
using Xapi.Storage.DataPath;
using Xapi.Storage.Service;

namespace Xapi.Server.Http;

/// <summary>
/// <c>PUT /import_raw_vdi</c> and <c>GET /export_raw_vdi</c>: a VDI's bytes over HTTP, raw or
/// VHD, streamed through the SR driver's image without holding the disk in memory, under a
/// task (the client's <c>task_id</c> or a new one named in the <c>task-id</c> header) that shows
/// progress, can be cancelled, and carries the outcome. As on real hosts, once the 200 is sent
/// the task, not the status line, says whether the transfer worked; what can be refused before
/// any byte is written (no such VDI, unknown format, a body larger than the disk) is refused
/// with an HTTP error and the task failed.
/// </summary>
public sealed partial class VdiTransferEndpoint(XapiDatabase database, SessionManager sessions, TaskManager tasks, StorageManager storage, ILogger<VdiTransferEndpoint> logger)
{
    public const string ImportPath = "/import_raw_vdi";
    public const string ExportPath = "/export_raw_vdi";

    private const string RawFormatName = "raw";
    private const string VhdFormatName = "vhd";
    private const int ChunkBytes = 4 << 20;

    public async Task HandleAsync(HttpContext context)
    {
        if (!await HttpActionAuth.AuthorizeAsync(context, sessions, RoleSet.VmAdmin))
        {
            return;
        }
        var import = context.Request.Path == ImportPath;
        var query = context.Request.Query;
        TaskRef? clientTask = Parameter(context, "task_id") is { Length: > 0 } taskId ? new TaskRef(taskId) : null;
        if (clientTask is { } given && !database.Snapshot.TryGet(given, out _))
        {
            await RefuseAsync(context, StatusCodes.Status404NotFound, $"no task {given.Value}");
            return;
        }
        var owner = Parameter(context, "session_id");
        using var binding = tasks.Bind(clientTask, import ? "Importing raw VDI" : "Exporting raw VDI", owner, context.RequestAborted);
        context.Response.Headers["task-id"] = binding.Task.Value;
        var format = (query["format"].FirstOrDefault() ?? RawFormatName).ToLowerInvariant();
        if (format is not (RawFormatName or VhdFormatName))
        {
            binding.Fail(XenApiErrors.InternalError($"Unknown format {format}"));
            await RefuseAsync(context, StatusCodes.Status404NotFound, $"Unknown format {format}");
            return;
        }
        if (!TryResolve(database.Snapshot, query["vdi"].FirstOrDefault(), out var vdi))
        {
            binding.Fail(XenApiErrors.VdiMissing("", query["vdi"].FirstOrDefault() ?? ""));
            await RefuseAsync(context, StatusCodes.Status404NotFound, "the vdi parameter names no VDI");
            return;
        }
        try
        {
            if (import)
            {
                await ImportAsync(context, binding, vdi, format);
            }
            else
            {
                await ExportAsync(context, binding, vdi, format);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || binding.Cancellation.IsCancellationRequested)
        {
            var failure = e switch
            {
                SmException sm => StorageManager.ToXenApi(sm, database.Snapshot.TryGet(vdi, out var record) ? record.SR : SRRef.Null),
                SrFullException full => XenApiErrors.SrFull(full.Requested.ToString(System.Globalization.CultureInfo.InvariantCulture), full.Available.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                IOException or InvalidDataException or ArgumentOutOfRangeException => XenApiErrors.VdiIoError("Device I/O errors"),
                _ => e,
            };
            logger.LogWarning("{Direction} of VDI {Vdi} failed: {Error}", import ? "Import" : "Export", vdi.Value, failure.Message);
            binding.Fail(failure);
            if (!context.Response.HasStarted)
            {
                await RefuseAsync(context, failure is XenApiException { Code: ErrorCodes.VdiTooSmall } ? StatusCodes.Status400BadRequest : StatusCodes.Status500InternalServerError, failure.Message);
            }
            else
            {
                context.Abort();
            }
        }
    }

    private static string? Parameter(HttpContext context, string name) =>
        context.Request.Query[name].FirstOrDefault() ?? context.Request.Cookies[name];

    /// <summary>A VDI named by ref or by uuid, as real hosts accept either.</summary>
    private static bool TryResolve(DbSnapshot snapshot, string? value, out VDIRef vdi)
    {
        vdi = VDIRef.Null;
        if (string.IsNullOrEmpty(value))
        {
            return false;
        }
        if (snapshot.TryGet(new VDIRef(value), out _))
        {
            vdi = new VDIRef(value);
            return true;
        }
        if (snapshot.TryGetByUuid(VDIRef.Class, value, out var row))
        {
            vdi = new VDIRef(row.Ref);
            return true;
        }
        return false;
    }

    private async Task<(IDiskImage Image, VDIRecord Record)> OpenAsync(VDIRef vdi, bool writable, CancellationToken cancellationToken)
    {
        var snapshot = database.Snapshot;
        var record = snapshot.Get(vdi);
        var context = storage.PluggedContext(snapshot, record.SR);
        var driver = storage.DriverOf(snapshot.Get(record.SR));
        if (writable && record.ReadOnly)
        {
            throw XenApiErrors.VdiReadonly(vdi.Value);
        }
        var image = await driver.OpenAsync(context, VDIApi.Info(record), writable, cancellationToken);
        return (image, record);
    }

    private async Task ImportAsync(HttpContext context, TaskManager.Binding binding, VDIRef vdi, string format)
    {
        var (image, record) = await OpenAsync(vdi, writable: true, binding.Cancellation);
        await using (image)
        {
            var length = context.Request.ContentLength;
            if (format == RawFormatName && length > image.Size)
            {
                // Refused before a byte is written; real hosts would fail on the write past the end.
                throw XenApiErrors.VdiTooSmall(vdi.Value, length.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            await StartResponseAsync(context, "application/octet-stream", null);
            if (format == RawFormatName)
            {
                await ImportRawAsync(context.Request.Body, image, length ?? image.Size, binding);
            }
            else
            {
                await ImportVhdAsync(context.Request.Body, image, length, vdi, binding);
            }
            await image.FlushAsync(binding.Cancellation);
        }
        binding.Succeed(vdi.Value);
        await storage.ScanAsync(record.SR, CancellationToken.None);
    }

    private static async Task ImportRawAsync(Stream body, IDiskImage image, long expected, TaskManager.Binding binding)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            var offset = 0L;
            var lastPercent = -1L;
            while (true)
            {
                var filled = 0;
                while (filled < ChunkBytes)
                {
                    var read = await body.ReadAsync(buffer.AsMemory(filled, ChunkBytes - filled), binding.Cancellation);
                    if (read == 0)
                    {
                        break;
                    }
                    filled += read;
                }
                if (filled == 0)
                {
                    break;
                }
                if (offset + filled > image.Size)
                {
                    throw XenApiErrors.VdiTooSmall(binding.Task.Value, (offset + filled).ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                var chunk = buffer.AsMemory(0, filled);
                if (chunk.Span.IndexOfAnyExcept((byte)0) < 0)
                {
                    await image.WriteZeroesAsync(offset, filled, binding.Cancellation);
                }
                else
                {
                    await image.WriteAsync(offset, chunk, binding.Cancellation);
                }
                offset += filled;
                var percent = offset * 100 / Math.Max(1, expected);
                if (percent != lastPercent)
                {
                    lastPercent = percent;
                    binding.Progress(Math.Min(1.0, percent / 100.0));
                }
                if (filled < ChunkBytes)
                {
                    break;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task ExportAsync(HttpContext context, TaskManager.Binding binding, VDIRef vdi, string format)
    {
        var baseVdi = VDIRef.Null;
        if (context.Request.Query["base"].FirstOrDefault() is { Length: > 0 } baseName && !TryResolve(database.Snapshot, baseName, out baseVdi))
        {
            throw XenApiErrors.VdiMissing("", baseName);
        }
        var (image, record) = await OpenAsync(vdi, writable: false, binding.Cancellation);
        await using (image)
        {
            IReadOnlyList<DiskExtent>? extents = null;
            if (!baseVdi.IsNull)
            {
                var snapshot = database.Snapshot;
                var baseRecord = snapshot.Get(baseVdi);
                var driver = storage.DriverOf(snapshot.Get(record.SR));
                extents = baseRecord.SR == record.SR
                    ? await driver.ChangedExtentsAsync(storage.PluggedContext(snapshot, record.SR), VDIApi.Info(record), VDIApi.Info(baseRecord), binding.Cancellation)
                    : null;
            }
            extents ??= await DiskCopy.ToListAsync(image.MapAsync(0, image.Size, binding.Cancellation), binding.Cancellation);
            var disposition = $"attachment; filename=\"{record.Uuid}.{format}\"";
            if (format == RawFormatName)
            {
                context.Response.ContentLength = image.Size;
                await StartResponseAsync(context, "application/octet-stream", disposition);
                await ExportRawAsync(context.Response.Body, image, extents, binding);
            }
            else
            {
                await ExportVhdAsync(context, image, extents, disposition, vdi, baseVdi, binding);
            }
        }
        binding.Succeed(null);
    }

    /// <summary>The whole disk, zeros included; outside the extents asked for (a base= export) reads as zeros.</summary>
    private static async Task ExportRawAsync(Stream body, IDiskImage image, IReadOnlyList<DiskExtent> extents, TaskManager.Binding binding)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        var zeros = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        Array.Clear(zeros, 0, ChunkBytes);
        try
        {
            var position = 0L;
            var lastPercent = -1L;
            async Task ZerosAsync(long until)
            {
                while (position < until)
                {
                    var length = (int)Math.Min(ChunkBytes, until - position);
                    await body.WriteAsync(zeros.AsMemory(0, length), binding.Cancellation);
                    position += length;
                }
            }
            foreach (var extent in extents)
            {
                await ZerosAsync(extent.Offset);
                if (extent.Zero)
                {
                    await ZerosAsync(extent.End);
                    continue;
                }
                while (position < extent.End)
                {
                    var length = (int)Math.Min(ChunkBytes, extent.End - position);
                    await image.ReadAsync(position, buffer.AsMemory(0, length), binding.Cancellation);
                    await body.WriteAsync(buffer.AsMemory(0, length), binding.Cancellation);
                    position += length;
                    var percent = position * 100 / Math.Max(1, image.Size);
                    if (percent != lastPercent)
                    {
                        lastPercent = percent;
                        binding.Progress(percent / 100.0);
                    }
                }
            }
            await ZerosAsync(image.Size);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }

    private static async Task StartResponseAsync(HttpContext context, string contentType, string? disposition)
    {
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = contentType;
        context.Response.Headers.CacheControl = "no-cache, no-store";
        if (disposition is not null)
        {
            context.Response.Headers.ContentDisposition = disposition;
        }
        await context.Response.StartAsync();
    }

    private static async Task RefuseAsync(HttpContext context, int status, string reason)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(reason + "\n");
    }
}
