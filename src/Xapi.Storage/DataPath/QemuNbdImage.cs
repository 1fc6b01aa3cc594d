using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.Nbd;

namespace Xapi.Storage.DataPath;

/// <summary>How qemu-nbd uses the host page cache.</summary>
public enum QemuNbdCache
{
    /// <summary>
    /// Through the page cache; NBD FLUSH (<see cref="IDiskImage.FlushAsync"/>) makes writes durable.
    /// The default: the data path flushes where durability matters (end of an import), reads
    /// get read-ahead, and it works on every filesystem (tmpfs refused O_DIRECT before Linux 6.6).
    /// </summary>
    Writeback,

    /// <summary>O_DIRECT: no page cache; writes still need a flush for the disk's own cache.</summary>
    None,
}

/// <summary>What <see cref="QemuNbdImage.OpenAsync"/> serves and how.</summary>
public sealed record QemuNbdImageOptions
{
    /// <summary>The image file (top of a qcow2 chain) or a URL qemu understands.</summary>
    public required string Image { get; init; }

    /// <summary><c>qcow2</c> or <c>raw</c>.</summary>
    public required string Format { get; init; }

    /// <summary>A private directory for the Unix socket (its path must fit in 107 bytes).</summary>
    public required string SocketDirectory { get; init; }

    public bool Writable { get; init; }

    public QemuNbdCache Cache { get; init; } = QemuNbdCache.Writeback;

    /// <summary>How long qemu-nbd may take to open the image and accept the connection.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(15);

    public string QemuNbdPath { get; init; } = "qemu-nbd";
}

/// <summary>
/// A disk image in any format qemu reads (a qcow2 chain is read through its backing files),
/// served by a private <c>qemu-nbd</c> on a Unix socket and spoken to with <see cref="NbdClient"/>.
/// The qemu-nbd dies with this process even on SIGKILL (<c>setpriv --pdeathsig KILL</c>) and
/// is gone when the image is disposed.
/// </summary>
public sealed class QemuNbdImage : IDiskImage
{
    private const string ExportName = "disk";
    private const int MaxSocketPath = 107;
    private const int StderrKept = 4096;
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(10);
    private static readonly long MapChunk = 1L << 31;

    /// <summary>
    /// qemu-nbd allocates a buffer per request. Under glibc's defaults a multi-MiB buffer comes
    /// fresh from mmap (or from heap memory trimmed back to the kernel after the last request),
    /// and every 4 KiB page of it faults on first touch: measured here, one fault per page read,
    /// which cut reads through qemu-nbd to a third or less. A fixed mmap threshold of 32 MiB
    /// (the largest request, and glibc's ceiling) and a trim threshold above it keep request
    /// buffers in the heap for reuse (both are needed); qemu-nbd then keeps at most 128 MiB
    /// of freed memory.
    /// </summary>
    private static readonly (string Name, string Value)[] MallocTuning =
    [
        ("MALLOC_MMAP_THRESHOLD_", (32 << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("MALLOC_TRIM_THRESHOLD_", (128 << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)),
    ];

    private readonly Process _process;
    private readonly NbdClient _client;
    private readonly string _socketPath;
    private readonly StderrTail _stderr;
    private readonly ILogger _logger;
    private int _disposed;

    private QemuNbdImage(Process process, NbdClient client, string socketPath, StderrTail stderr, ILogger logger)
    {
        _process = process;
        _client = client;
        _socketPath = socketPath;
        _stderr = stderr;
        _logger = logger;
    }

    public long Size => _client.Size;

    public bool Writable => !_client.ReadOnly;

    /// <summary>The qemu-nbd process id (for diagnostics and tests).</summary>
    public int ProcessId => _process.Id;

    /// <summary>
    /// Opens one image through qemu-nbd with the defaults drivers use. A local image opened for
    /// writing bypasses the page cache, as the real server's vhd-tool writes imports
    /// (<c>--direct</c>): a bulk write then costs no copy into the cache and leaves no gigabytes
    /// of dirty pages for the closing flush; a filesystem that refuses O_DIRECT (tmpfs before Linux 6.6) gets the
    /// page cache instead.
    /// </summary>
    public static async ValueTask<IDiskImage> OpenAsync(string image, string format, bool writable, string socketDirectory, CancellationToken cancellationToken)
    {
        var options = new QemuNbdImageOptions { Image = image, Format = format, Writable = writable, SocketDirectory = socketDirectory };
        if (writable && !image.Contains("://", StringComparison.Ordinal))
        {
            try
            {
                return await OpenAsync(options with { Cache = QemuNbdCache.None }, null, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException)
            {
                // Most likely O_DIRECT refused; a real fault shows again below, with its own message.
            }
        }
        return await OpenAsync(options, null, cancellationToken).ConfigureAwait(false);
    }

    public static async Task<QemuNbdImage> OpenAsync(QemuNbdImageOptions options, ILogger? logger, CancellationToken cancellationToken)
    {
        logger ??= NullLogger.Instance;
        var socketPath = Path.Combine(options.SocketDirectory, $"nbd-{Guid.NewGuid():N}.sock");
        if (Encoding.UTF8.GetByteCount(socketPath) > MaxSocketPath)
        {
            throw new ArgumentException($"the socket path {socketPath} is longer than a Unix socket allows ({MaxSocketPath} bytes)", nameof(options));
        }
        var start = new ProcessStartInfo("setpriv")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in Arguments(options, socketPath))
        {
            start.ArgumentList.Add(argument);
        }
        foreach (var (name, value) in MallocTuning)
        {
            start.Environment[name] = value;
        }
        var stderr = new StderrTail();
        var process = await ChildProcessLauncher.StartAsync(start).ConfigureAwait(false);
        process.ErrorDataReceived += (_, e) => stderr.Add(e.Data);
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        process.StandardInput.Close();
        logger.LogDebug("qemu-nbd {Pid} serves {Image} ({Format}, {Mode}, cache {Cache}) on {Socket}",
            process.Id, options.Image, options.Format, options.Writable ? "writable" : "read-only", options.Cache, socketPath);
        try
        {
            var client = await ConnectAsync(process, socketPath, options.StartTimeout, stderr, cancellationToken).ConfigureAwait(false);
            return new QemuNbdImage(process, client, socketPath, stderr, logger);
        }
        catch
        {
            await StopAsync(process, socketPath, logger).ConfigureAwait(false);
            process.Dispose();
            throw;
        }
    }

    /// <summary>The command line: setpriv makes the kernel SIGKILL qemu-nbd when its parent dies.</summary>
    internal static IReadOnlyList<string> Arguments(QemuNbdImageOptions options, string socketPath)
    {
        if (options.Format is not ("qcow2" or "raw"))
        {
            throw new ArgumentException($"unsupported image format {options.Format}", nameof(options));
        }
        var arguments = new List<string>
        {
            "--pdeathsig", "KILL", "--",
            options.QemuNbdPath,
            "--format=" + options.Format,
            "--socket=" + socketPath,
            "--export-name=" + ExportName,
            // One client: qemu-nbd exits when it disconnects, so nothing lingers after Dispose.
            "--shared=1",
            "--cache=" + (options.Cache == QemuNbdCache.None ? "none" : "writeback"),
        };
        if (options.Writable)
        {
            // WRITE_ZEROES without NO_HOLE may then deallocate (sparse import of zeros).
            arguments.Add("--discard=unmap");
        }
        else
        {
            arguments.Add("--read-only");
        }
        arguments.Add("--");
        arguments.Add(options.Image);
        return arguments;
    }

    private static async Task<NbdClient> ConnectAsync(Process process, string socketPath, TimeSpan timeout, StderrTail stderr, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        var exited = process.WaitForExitAsync(CancellationToken.None);
        var delay = TimeSpan.FromMilliseconds(2);
        try
        {
            while (true)
            {
                if (exited.IsCompleted)
                {
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    throw new IOException($"qemu-nbd exited with status {process.ExitCode} before serving: {stderr}");
                }
                try
                {
                    return await NbdClient.ConnectUnixAsync(socketPath, ExportName, deadline.Token).ConfigureAwait(false);
                }
                catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable or SocketError.InvalidArgument
                                                 || !File.Exists(socketPath))
                {
                    // qemu-nbd has not bound or not listened yet: it prints nothing when ready,
                    // so the socket is the only sign; ask again soon, up to the deadline.
                }
                catch (IOException ex)
                {
                    // qemu-nbd listens before it opens the image, so a bad image shows as a
                    // dropped handshake: its exit status and stderr say why.
                    try
                    {
                        await exited.WaitAsync(deadline.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        throw new IOException($"qemu-nbd dropped the NBD handshake: {stderr}", ex);
                    }
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    throw new IOException($"qemu-nbd exited with status {process.ExitCode} before serving: {stderr}", ex);
                }
                await Task.WhenAny(exited, Task.Delay(delay, deadline.Token)).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromMilliseconds(50).Ticks));
                deadline.Token.ThrowIfCancellationRequested();
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"qemu-nbd did not serve {socketPath} within {timeout}: {stderr}");
        }
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, buffer.Length, Size);
        return new ValueTask(_client.ReadAsync(offset, buffer, cancellationToken));
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, data.Length);
        return new ValueTask(_client.WriteAsync(offset, data, cancellationToken));
    }

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken)
    {
        ImageRange.CheckWritable(this, offset, length);
        return new ValueTask(_client.WriteZeroesAsync(offset, length, cancellationToken));
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken) => new(_client.FlushAsync(cancellationToken));

    public async IAsyncEnumerable<DiskExtent> MapAsync(long offset, long length, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ImageRange.Check(offset, length, Size);
        var end = offset + length;
        if (!_client.HasAllocationContext)
        {
            if (length > 0)
            {
                yield return new DiskExtent(offset, length, Zero: false);
            }
            yield break;
        }
        DiskExtent? run = null;
        var position = offset;
        while (position < end)
        {
            var extents = await _client.BlockStatusAsync(position, Math.Min(end - position, MapChunk), cancellationToken).ConfigureAwait(false);
            foreach (var extent in extents)
            {
                var extentEnd = Math.Min(extent.Offset + extent.Length, end);
                if (extentEnd <= position)
                {
                    continue;
                }
                if (run is { } current && current.Zero == extent.Zero)
                {
                    run = current with { Length = extentEnd - current.Offset };
                }
                else
                {
                    if (run is { } finished)
                    {
                        yield return finished;
                    }
                    run = new DiskExtent(position, extentEnd - position, extent.Zero);
                }
                position = extentEnd;
                if (position >= end)
                {
                    break;
                }
            }
        }
        if (run is { } last)
        {
            yield return last;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        try
        {
            await _client.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "Disconnecting from qemu-nbd {Pid} failed", _process.Id);
        }
        await StopAsync(_process, _socketPath, _logger).ConfigureAwait(false);
        if (_process.ExitCode != 0)
        {
            _logger.LogWarning("qemu-nbd {Pid} exited with status {Status}: {Stderr}", _process.Id, _process.ExitCode, _stderr.ToString());
        }
        _process.Dispose();
    }

    /// <summary>Waits for qemu-nbd to leave by itself (it exits when its one client does), else kills it.</summary>
    private static async Task StopAsync(Process process, string socketPath, ILogger logger)
    {
        using (var patience = new CancellationTokenSource(ExitTimeout))
        {
            try
            {
                await process.WaitForExitAsync(patience.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                logger.LogWarning("qemu-nbd {Pid} still runs {Timeout} after its client left; killing it", process.Id, ExitTimeout);
            }
        }
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: false);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
        }
        try
        {
            File.Delete(socketPath);
        }
        catch (IOException)
        {
            // Gone already, or its directory is; either way nothing listens there.
        }
    }

    /// <summary>The last few KiB of qemu-nbd's stderr, for error messages.</summary>
    private sealed class StderrTail
    {
        private readonly StringBuilder _text = new();

        public void Add(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (_text)
            {
                _text.AppendLine(line);
                if (_text.Length > StderrKept)
                {
                    _text.Remove(0, _text.Length - StderrKept);
                }
            }
        }

        public override string ToString()
        {
            lock (_text)
            {
                return _text.Length == 0 ? "(no output)" : _text.ToString().Trim();
            }
        }
    }
}
