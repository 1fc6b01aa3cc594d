using System.Buffers;
using System.IO.Pipelines;
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
                await ImportRawAsync(context.Request.BodyReader, image, vdi, length ?? image.Size, binding);
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
    /// The body straight from the connection's receive buffers, 64 KiB at a time (a qcow2
    /// cluster): runs of zeros are only counted and become one write-zeroes (a thin disk imported
    /// raw stays thin), runs of data are gathered and written while the next ones arrive. Only data
    /// is copied; the zeros of a mostly empty disk are looked at once, in place.
    /// </summary>
    private static async Task ImportRawAsync(PipeReader body, IDiskImage image, VDIRef vdi, long expected, TaskManager.Binding binding)
    {
        await using var writer = new SparseRunWriter(image, binding.Cancellation);
        var offset = 0L;
        var lastPercent = -1L;
        while (true)
        {
            var result = await body.ReadAsync(binding.Cancellation);
            var buffer = result.Buffer;
            while (buffer.Length > 0)
            {
                var granule = ZeroGranule - (int)(offset % ZeroGranule);
                if (buffer.Length < granule && !result.IsCompleted)
                {
                    break;
                }
                var piece = buffer.Slice(0, Math.Min(granule, buffer.Length));
                if (offset + piece.Length > image.Size)
                {
                    throw XenApiErrors.VdiTooSmall(vdi.Value, (offset + piece.Length).ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                await writer.AddAsync(offset, piece, IsZero(piece));
                offset += piece.Length;
                buffer = buffer.Slice(piece.End);
            }
            body.AdvanceTo(buffer.Start, buffer.End);
            var percent = offset * 100 / Math.Max(1, expected);
            if (percent != lastPercent)
            {
                lastPercent = percent;
                binding.Progress(Math.Min(1.0, percent / 100.0));
            }
            if (result.IsCompleted || result.IsCanceled)
            {
                break;
            }
        }
        await writer.CompleteAsync();
    }

    private static bool IsZero(in ReadOnlySequence<byte> piece)
    {
        foreach (var segment in piece)
        {
            if (segment.Span.ContainsAnyExcept((byte)0))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// Writes a disk front to back from runs of data and of zeros, with one write in flight while
    /// the caller receives what follows: data runs are gathered into one of two buffers (the other
    /// may still be on its way to the disk), zero runs cost nothing until they end.
    /// </summary>
    private sealed class SparseRunWriter(IDiskImage image, CancellationToken cancellationToken) : IAsyncDisposable
    {
        private readonly byte[][] _buffers = [ArrayPool<byte>.Shared.Rent(ChunkBytes), ArrayPool<byte>.Shared.Rent(ChunkBytes)];
        private int _turn;
        private int _filled;
        private long _dataStart;
        private long _zeroStart;
        private long _zeroLength;
        private Task? _writing;

        /// <summary>A piece of at most <see cref="ZeroGranule"/> bytes at <paramref name="offset"/>, right after the one before.</summary>
        public async ValueTask AddAsync(long offset, ReadOnlySequence<byte> piece, bool zero)
        {
            if (zero)
            {
                await WriteDataAsync();
                if (_zeroLength == 0)
                {
                    _zeroStart = offset;
                }
                _zeroLength += piece.Length;
                return;
            }
            await WriteZerosAsync();
            if (_filled == 0)
            {
                _dataStart = offset;
            }
            piece.CopyTo(_buffers[_turn].AsSpan(_filled));
            _filled += (int)piece.Length;
            if (_filled > ChunkBytes - ZeroGranule)
            {
                await WriteDataAsync();
            }
        }

        public async Task CompleteAsync()
        {
            await WriteDataAsync();
            await WriteZerosAsync();
            await StartAsync(null);
        }

        private async ValueTask WriteDataAsync()
        {
            if (_filled == 0)
            {
                return;
            }
            await StartAsync(image.WriteAsync(_dataStart, _buffers[_turn].AsMemory(0, _filled), cancellationToken).AsTask());
            _turn ^= 1;
            _filled = 0;
        }

        private async ValueTask WriteZerosAsync()
        {
            if (_zeroLength == 0)
            {
                return;
            }
            await StartAsync(image.WriteZeroesAsync(_zeroStart, _zeroLength, cancellationToken).AsTask());
            _zeroLength = 0;
        }

        // Returns once the write before the new one has finished, so the buffer the caller fills next is free.
        private async ValueTask StartAsync(Task? write)
        {
            var previous = _writing;
            _writing = write;
            if (previous is not null)
            {
                await previous;
            }
        }

        public async ValueTask DisposeAsync()
        {
            // A failed receive must not hand a buffer back while a write still reads from it.
            await QuietlyAsync(_writing);
            ArrayPool<byte>.Shared.Return(_buffers[0]);
            ArrayPool<byte>.Shared.Return(_buffers[1]);
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
                await ExportRawAsync(context.Response.BodyWriter, image, extents, binding);
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
    /// zeros. Each chunk is read (or zeroed) straight into the connection's send buffer: no copy
    /// of our own between the disk and the socket.
    /// </summary>
    private static async Task ExportRawAsync(PipeWriter body, IDiskImage image, IReadOnlyList<DiskExtent> extents, TaskManager.Binding binding)
    {
        var lastPercent = -1L;
        foreach (var (offset, length, zero) in Chunks(extents, image.Size))
        {
            var piece = body.GetMemory(length)[..length];
            if (zero)
            {
                piece.Span.Clear();
            }
            else
            {
                await image.ReadAsync(offset, piece, binding.Cancellation);
            }
            body.Advance(length);
            var flushed = await body.FlushAsync(binding.Cancellation);
            if (flushed.IsCanceled || flushed.IsCompleted)
            {
                throw new OperationCanceledException("the client stopped reading the export");
            }
            var percent = (offset + length) * 100 / Math.Max(1, image.Size);
            if (percent != lastPercent)
            {
                lastPercent = percent;
                binding.Progress(percent / 100.0);
            }
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
        if (context.Response.HasStarted)
        {
            return;
        }
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
        if (context.Response.HasStarted)
        {
            // The 200 has gone: the failed task is the answer, and the cut connection tells the sender to stop.
            context.Abort();
            return;
        }
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        await context.Response.WriteAsync(reason + "\n");
    }
}
