using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace Xapi.Server.Http;

/// <summary>
/// Real <c>xe</c> uploads a file (vdi-import, vm-import) with an HTTP/1.0 PUT carrying the CLI's
/// task, and closes its socket as soon as the last byte is written. Kestrel takes that FIN for an
/// aborted request and drops body bytes it has received but not yet handed over, so the import
/// would lose its tail. For exactly those requests this connection's input hides the FIN from
/// Kestrel: it sees every byte, then an idle connection, which it closes itself after the reply
/// (HTTP/1.0 has no keep-alive).
/// </summary>
internal static class ThinClientUpload
{
    private const int MaxRequestLineBytes = 8 * 1024;

    private static readonly byte[] PutPrefix = "PUT "u8.ToArray();
    private static readonly byte[] TaskParameter = "task_id="u8.ToArray();
    private static readonly byte[] Http10 = " HTTP/1.0"u8.ToArray();

    /// <summary>Whether the buffer starts like a PUT (so its request line is worth reading whole).</summary>
    public static bool MayBe(ReadOnlySequence<byte> buffer)
    {
        Span<byte> start = stackalloc byte[PutPrefix.Length];
        var available = (int)Math.Min(buffer.Length, start.Length);
        buffer.Slice(0, available).CopyTo(start);
        return start[..available].SequenceEqual(PutPrefix.AsSpan(0, available));
    }

    /// <summary>True or false once the request line is complete (or too long to be one); null while it is still arriving.</summary>
    public static bool? Is(ReadOnlySequence<byte> buffer, bool inputEnded)
    {
        var window = buffer.Slice(0, Math.Min(buffer.Length, MaxRequestLineBytes));
        if (window.PositionOf((byte)'\n') is not { } end)
        {
            return inputEnded || buffer.Length >= MaxRequestLineBytes ? false : null;
        }
        var line = window.Slice(0, end).ToArray().AsSpan().TrimEnd((byte)'\r');
        return line.StartsWith(PutPrefix) && line.IndexOf(TaskParameter) > 0 && line.EndsWith(Http10);
    }

    /// <summary>Runs the HTTP pipeline over an input that never reports the client's FIN.</summary>
    public static async Task ServeAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        var original = connection.Transport;
        var originalClosed = connection.ConnectionClosed;
        using var closed = new CancellationTokenSource();
        var transport = new FinHidingTransport(original, closed);
        // Kestrel hears of the close through the token as well as through the input.
        connection.Transport = transport;
        connection.ConnectionClosed = closed.Token;
        var pump = transport.PumpAsync();
        try
        {
            await next(connection);
        }
        finally
        {
            connection.Transport = original;
            connection.ConnectionClosed = originalClosed;
            transport.Stop();
            await pump;
        }
    }

    private sealed class FinHidingTransport(IDuplexPipe inner, CancellationTokenSource closed) : IDuplexPipe
    {
        private readonly Pipe _input = new(new PipeOptions(useSynchronizationContext: false));
        private readonly CancellationTokenSource _stop = new();

        public PipeReader Input => _input.Reader;

        public PipeWriter Output => inner.Output;

        public async Task PumpAsync()
        {
            try
            {
                while (true)
                {
                    var read = await inner.Input.ReadAsync(_stop.Token);
                    foreach (var segment in read.Buffer)
                    {
                        await _input.Writer.WriteAsync(segment, _stop.Token);
                    }
                    inner.Input.AdvanceTo(read.Buffer.End);
                    if (read.IsCompleted || read.IsCanceled)
                    {
                        return; // The client's FIN: everything it sent is in; Kestrel is not told.
                    }
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
            }
            catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or InvalidOperationException)
            {
                // A reset is a real abort: Kestrel hears of it.
                await _input.Writer.CompleteAsync(e);
                await closed.CancelAsync();
            }
        }

        public void Stop()
        {
            _stop.Cancel();
            _input.Writer.Complete();
        }
    }
}
