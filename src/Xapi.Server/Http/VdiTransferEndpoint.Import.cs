using System.Buffers.Binary;
using Microsoft.AspNetCore.Http;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Sessions;
using Xapi.Storage.Formats.Vhd;

namespace Xapi.Server.Http;

public sealed partial class VdiTransferEndpoint
{
    public const string VmImportPath = "/import";

    // A VHD stream starts with the copy of its footer: the cookie, then the current size at byte 48.
    private static ReadOnlySpan<byte> VhdCookie => "conectix"u8;
    private const int FooterSize = 512;
    private const int CurrentSizeOffset = 48;
    private const string ImportedVdiName = "Imported VDI";

    /// <summary>
    /// <c>PUT /import</c> of a VHD (real hosts take only XVA there; XVA, a whole VM, is not
    /// imported yet): a new VDI of the VHD's size on <c>sr_id</c> (or the pool's default SR)
    /// receives it, and the task's result is that VDI. A failed import leaves no VDI behind.
    /// </summary>
    public async Task HandleImportAsync(HttpContext context)
    {
        if (!await HttpActionAuth.AuthorizeAsync(context, sessions, RoleSet.VmAdmin))
        {
            return;
        }
        TaskRef? clientTask = Parameter(context, "task_id") is { Length: > 0 } taskId ? new TaskRef(taskId) : null;
        if (clientTask is { } given && !database.Snapshot.TryGet(given, out _))
        {
            await RefuseAsync(database, context, StatusCodes.Status404NotFound, $"no task {given.Value}");
            return;
        }
        using var binding = tasks.Bind(clientTask, "VM import", Parameter(context, "session_id"), context.RequestAborted);
        context.Response.Headers["task-id"] = binding.Task.Value;
        if (clientTask is not null)
        {
            // A client with its own task (xe's vm-import) reads the status line before it sends
            // the body, as real hosts answer such a request at once; from here the task, not the
            // status, carries a refusal.
            await StartResponseAsync(database, context, "application/octet-stream", null);
        }
        var sr = TargetSr(database.Snapshot, context);
        if (sr.IsNull)
        {
            var failure = XenApiErrors.DefaultSrNotFound(database.Snapshot.All<PoolRecord>().Select(p => p.DefaultSR.Value).FirstOrDefault() ?? "");
            binding.Fail(failure);
            await RefuseAsync(database, context, StatusCodes.Status404NotFound, failure.Message);
            return;
        }
        var footer = new byte[FooterSize];
        var peeked = await ReadUpToAsync(context.Request.Body, footer, binding.Cancellation);
        if (peeked < FooterSize || !footer.AsSpan(0, VhdCookie.Length).SequenceEqual(VhdCookie))
        {
            var failure = XenApiErrors.ImportError("only a VHD stream can be imported here; XVA (whole VM) import is not supported yet");
            binding.Fail(failure);
            await RefuseAsync(database, context, StatusCodes.Status400BadRequest, failure.Message);
            return;
        }
        var size = BinaryPrimitives.ReadInt64BigEndian(footer.AsSpan(CurrentSizeOffset));
        if (size <= 0 || size > VhdFormat.MaxVirtualSize)
        {
            var failure = XenApiErrors.VdiIoError("Device I/O errors", $"the VHD's size {size} is not one a disk can have");
            binding.Fail(failure);
            await RefuseAsync(database, context, StatusCodes.Status400BadRequest, failure.Message);
            return;
        }
        VDIRef vdi;
        try
        {
            vdi = await storage.CreateVdiAsync(sr, ImportedVdiName, size, binding.Cancellation);
        }
        catch (XenApiException e)
        {
            binding.Fail(e);
            await RefuseAsync(database, context, StatusCodes.Status500InternalServerError, e.Message);
            return;
        }
        try
        {
            var (image, _) = await OpenAsync(vdi, writable: true, binding.Cancellation);
            await using (image)
            {
                await StartResponseAsync(database, context, "application/octet-stream", null);
                var body = new PrefixedStream(footer, context.Request.Body);
                await ImportVhdAsync(body, image, context.Request.ContentLength, vdi, binding);
                await image.FlushAsync(binding.Cancellation);
            }
            binding.Succeed(vdi.Value);
            await database.WhenVisibleAsync(database.CommittedGeneration);
            await storage.ScanAsync(sr, CancellationToken.None);
        }
        catch (Exception e) when (e is not OperationCanceledException || binding.Cancellation.IsCancellationRequested)
        {
            binding.Fail(e is Xapi.Storage.SrFullException full
                ? XenApiErrors.SrFull(full.Requested.ToString(System.Globalization.CultureInfo.InvariantCulture), full.Available.ToString(System.Globalization.CultureInfo.InvariantCulture))
                : e);
            await storage.DiscardVdiAsync(vdi);
            if (context.Response.HasStarted)
            {
                await database.WhenVisibleAsync(database.CommittedGeneration);
                context.Abort();
            }
        }
    }

    private static SRRef TargetSr(DbSnapshot snapshot, HttpContext context)
    {
        if (Parameter(context, "sr_id") is { Length: > 0 } id && snapshot.TryGet(new SRRef(id), out _))
        {
            return new SRRef(id);
        }
        if (Parameter(context, "sr_uuid") is { Length: > 0 } uuid && snapshot.TryGetByUuid(SRRef.Class, uuid, out var row))
        {
            return new SRRef(row.Ref);
        }
        foreach (var pool in snapshot.All<PoolRecord>())
        {
            if (snapshot.TryGet(pool.DefaultSR, out _))
            {
                return pool.DefaultSR;
            }
        }
        return SRRef.Null;
    }

    private static async Task<int> ReadUpToAsync(Stream stream, byte[] buffer, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(filled), cancellationToken);
            if (read == 0)
            {
                break;
            }
            filled += read;
        }
        return filled;
    }

    /// <summary>The bytes already read to recognise the stream, then the rest of it.</summary>
    private sealed class PrefixedStream(byte[] prefix, Stream rest) : Stream
    {
        private int _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_position < prefix.Length)
            {
                var count = Math.Min(buffer.Length, prefix.Length - _position);
                prefix.AsMemory(_position, count).CopyTo(buffer);
                _position += count;
                return count;
            }
            return await rest.ReadAsync(buffer, cancellationToken);
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
