using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

/// <summary>
/// The least any HTTP server can do for a disk transfer: a PUT's body is received and dropped, a
/// GET is answered with <c>?bytes=N</c> bytes sent from one buffer. The same curl command against
/// it measures what the client and loopback TCP cost on their own, so the benchmark can show how
/// much of a gap to dd is left to the daemon at all.
/// </summary>
internal sealed class NullHttpServer : IAsyncDisposable
{
    private const int BufferBytes = 4 << 20;

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly byte[] _payload = new byte[BufferBytes];

    public NullHttpServer()
    {
        Random.Shared.NextBytes(_payload);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public Uri Uri => new($"http://{_listener.LocalEndpoint}/");

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            _ = Task.Run(() => ServeAsync(connection));
        }
    }

    private async Task ServeAsync(Socket connection)
    {
        using var _ = connection;
        var buffer = new byte[BufferBytes];
        var filled = 0;
        int headerEnd;
        while ((headerEnd = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
        {
            var read = await connection.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
            if (read == 0)
            {
                return;
            }
            filled += read;
        }
        var head = Encoding.ASCII.GetString(buffer, 0, headerEnd).Split("\r\n");
        var requestLine = head[0].Split(' ');
        if (requestLine[0] == "PUT")
        {
            var length = long.Parse(head.First(h => h.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)).Split(':')[1].Trim(), CultureInfo.InvariantCulture);
            var received = (long)filled - (headerEnd + 4);
            while (received < length)
            {
                var read = await connection.ReceiveAsync(buffer, _stop.Token);
                if (read == 0)
                {
                    return;
                }
                received += read;
            }
            await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(), _stop.Token);
        }
        else
        {
            var bytes = long.Parse(requestLine[1].Split("bytes=")[1], CultureInfo.InvariantCulture);
            await connection.SendAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"), _stop.Token);
            for (var sent = 0L; sent < bytes;)
            {
                var count = (int)Math.Min(BufferBytes, bytes - sent);
                sent += await connection.SendAsync(_payload.AsMemory(0, count), _stop.Token);
            }
        }
        connection.Shutdown(SocketShutdown.Send);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
