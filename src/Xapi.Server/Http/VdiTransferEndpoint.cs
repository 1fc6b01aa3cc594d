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

    // The ext SR's qcow2 cluster: the unit a write allocates.
    private const int ZeroGranule = 64 << 10;

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
            await RefuseAsync(database, context, StatusCodes.Status404NotFound, $"no task {given.Value}");
            return;
        }
        var owner = Parameter(context, "session_id");
        using var binding = tasks.Bind(clientTask, import ? "Importing raw VDI" : "Exporting raw VDI", owner, context.RequestAborted);
        context.Response.Headers["task-id"] = binding.Task.Value;
        var format = (query["format"].FirstOrDefault() ?? RawFormatName).ToLowerInvariant();
        if (format is not (RawFormatName or VhdFormatName))
        {
            binding.Fail(XenApiErrors.InternalError($"Unknown format {format}"));
            await RefuseAsync(database, context, StatusCodes.Status404NotFound, $"Unknown format {format}");
            return;
        }
        if (!TryResolve(database.Snapshot, query["vdi"].FirstOrDefault(), out var vdi))
        {
            binding.Fail(XenApiErrors.VdiMissing("", query["vdi"].FirstOrDefault() ?? ""));
            await RefuseAsync(database, context, StatusCodes.Status404NotFound, "the vdi parameter names no VDI");
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
                await RefuseAsync(database, context, failure is XenApiException { Code: ErrorCodes.VdiTooSmall } ? StatusCodes.Status400BadRequest : StatusCodes.Status500InternalServerError, failure.Message);
            }
            else
            {
                await database.WhenVisibleAsync(database.CommittedGeneration);
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
        var image = await driver.OpenAsync(context, StorageRecords.InfoOf(record), writable, cancellationToken);
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
            await StartResponseAsync(database, context, "application/octet-stream", null);
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
        await database.WhenVisibleAsync(database.CommittedGeneration);
        await storage.ScanAsync(record.SR, CancellationToken.None);
    }

    /// <summary>
    /// The body in chunks, each written (or, when all zeros, left sparse) while the next one is
    /// received: the client, this process and the image's writer (qemu-nbd) then work at once
    /// instead of in turn.
    /// </summary>
    private static async Task ImportRawAsync(Stream body, IDiskImage image, long expected, TaskManager.Binding binding)
    {
        byte[][] buffers = [ArrayPool<byte>.Shared.Rent(ChunkBytes), ArrayPool<byte>.Shared.Rent(ChunkBytes)];
        Task? writing = null;
        try
        {
            var offset = 0L;
            var lastPercent = -1L;
            for (var turn = 0; ; turn++)
            {
                var buffer = buffers[turn % 2];
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
                if (writing is not null)
                {
                    await writing;
                    writing = null;
                }
                if (filled == 0)
                {
                    break;
                }
                if (offset + filled > image.Size)
                {
                    throw XenApiErrors.VdiTooSmall(binding.Task.Value, (offset + filled).ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                writing = WriteChunkAsync(image, offset, buffer.AsMemory(0, filled), binding.Cancellation);
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
            if (writing is not null)
            {
                await writing;
                writing = null;
            }
        }
        finally
        {
            // A failed read must not hand a buffer back while a write still reads from it.
            await QuietlyAsync(writing);
            ArrayPool<byte>.Shared.Return(buffers[0]);
            ArrayPool<byte>.Shared.Return(buffers[1]);
        }
    }

    private static async Task QuietlyAsync(Task? task)
    {
        if (task is null)
        {
            return;
        }
        try
        {
            await task;
        }
        catch (Exception)
        {
            // The failure that matters has already been thrown by whoever awaited first.
        }
    }

    /// <summary>
    /// Writes a chunk as runs of data and runs of zeros, at the granularity of a qcow2 cluster: a
    /// thin disk imported raw stays thin (zeros are written as zeros, not as allocated blocks).
    /// </summary>
    private static async Task WriteChunkAsync(IDiskImage image, long offset, ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
    {
        static bool IsZero(ReadOnlySpan<byte> piece) => piece.IndexOfAnyExcept((byte)0) < 0;
        var start = 0;
        while (start < chunk.Length)
        {
            var zero = IsZero(chunk.Span.Slice(start, Math.Min(ZeroGranule, chunk.Length - start)));
            var end = start;
            while (end < chunk.Length)
            {
                var length = Math.Min(ZeroGranule, chunk.Length - end);
                if (IsZero(chunk.Span.Slice(end, length)) != zero)
                {
                    break;
                }
                end += length;
            }
            if (zero)
            {
                await image.WriteZeroesAsync(offset + start, end - start, cancellationToken);
            }
            else
            {
                await image.WriteAsync(offset + start, chunk[start..end], cancellationToken);
            }
            start = end;
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
                    ? await driver.ChangedExtentsAsync(storage.PluggedContext(snapshot, record.SR), StorageRecords.InfoOf(record), StorageRecords.InfoOf(baseRecord), binding.Cancellation)
                    : null;
            }
            extents ??= await DiskCopy.ToListAsync(image.MapAsync(0, image.Size, binding.Cancellation), binding.Cancellation);
            var disposition = $"attachment; filename=\"{record.Uuid}.{format}\"";
            if (format == RawFormatName)
            {
                context.Response.ContentLength = image.Size;
                await StartResponseAsync(database, context, "application/octet-stream", disposition);
                await ExportRawAsync(context.Response.Body, image, extents, binding);
            }
            else
            {
                await ExportVhdAsync(context, image, extents, disposition, vdi, baseVdi, binding);
            }
        }
        binding.Succeed(null);
        await database.WhenVisibleAsync(database.CommittedGeneration);
    }

    /// <summary>
    /// The whole disk, zeros included; outside the extents asked for (a base= export) reads as
    /// zeros. The next data chunk is read from the image while the previous one is sent.
    /// </summary>
    private static async Task ExportRawAsync(Stream body, IDiskImage image, IReadOnlyList<DiskExtent> extents, TaskManager.Binding binding)
    {
        byte[][] buffers = [ArrayPool<byte>.Shared.Rent(ChunkBytes), ArrayPool<byte>.Shared.Rent(ChunkBytes)];
        var zeros = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        Array.Clear(zeros, 0, ChunkBytes);
        Task? reading = null;
        try
        {
            var position = 0L;
            var lastPercent = -1L;
            var turn = 0;
            // Every chunk in order: (offset, length, zero); reads run one chunk ahead of the sends.
            var chunks = Chunks(extents, image.Size).GetEnumerator();
            (long Offset, int Length, bool Zero)? next = chunks.MoveNext() ? chunks.Current : null;
            if (next is { Zero: false } first)
            {
                reading = image.ReadAsync(first.Offset, buffers[0].AsMemory(0, first.Length), binding.Cancellation).AsTask();
            }
            while (next is { } chunk)
            {
                next = chunks.MoveNext() ? chunks.Current : null;
                ReadOnlyMemory<byte> data;
                if (chunk.Zero)
                {
                    data = zeros.AsMemory(0, chunk.Length);
                }
                else
                {
                    await reading!;
                    reading = null;
                    data = buffers[turn % 2].AsMemory(0, chunk.Length);
                    turn++;
                }
                if (reading is null && next is { Zero: false } ahead)
                {
                    reading = image.ReadAsync(ahead.Offset, buffers[turn % 2].AsMemory(0, ahead.Length), binding.Cancellation).AsTask();
                }
                await body.WriteAsync(data, binding.Cancellation);
                position = chunk.Offset + chunk.Length;
                var percent = position * 100 / Math.Max(1, image.Size);
                if (percent != lastPercent)
                {
                    lastPercent = percent;
                    binding.Progress(percent / 100.0);
                }
            }
        }
        finally
        {
            await QuietlyAsync(reading);
            ArrayPool<byte>.Shared.Return(buffers[0]);
            ArrayPool<byte>.Shared.Return(buffers[1]);
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }

    /// <summary>The disk from 0 to <paramref name="size"/> in chunks of at most <see cref="ChunkBytes"/>, each data or zeros.</summary>
    private static IEnumerable<(long Offset, int Length, bool Zero)> Chunks(IReadOnlyList<DiskExtent> extents, long size)
    {
        var position = 0L;
        foreach (var extent in extents.Append(new DiskExtent(size, 0, Zero: true)))
        {
            while (position < extent.Offset)
            {
                var length = (int)Math.Min(ChunkBytes, extent.Offset - position);
                yield return (position, length, true);
                position += length;
            }
            while (position < extent.End)
            {
                var length = (int)Math.Min(ChunkBytes, extent.End - position);
                yield return (position, length, extent.Zero);
                position += length;
            }
        }
    }

    // Clients read the task named in the reply at once: it must be visible (durable) before the reply goes.
    private static async Task StartResponseAsync(XapiDatabase database, HttpContext context, string contentType, string? disposition)
    {
        await database.WhenVisibleAsync(database.CommittedGeneration);
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = contentType;
        context.Response.Headers.CacheControl = "no-cache, no-store";
        if (disposition is not null)
        {
            context.Response.Headers.ContentDisposition = disposition;
        }
        await context.Response.StartAsync();
        // StartAsync only queues the headers: an uploader must see the 200 and its task-id (to
        // follow or cancel the task) while it is still sending, as real hosts send it first.
        await context.Response.Body.FlushAsync();
    }

    private static async Task RefuseAsync(XapiDatabase database, HttpContext context, int status, string reason)
    {
        await database.WhenVisibleAsync(database.CommittedGeneration);
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(reason + "\n");
    }
}
