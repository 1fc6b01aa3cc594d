using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Nbd;

/// <summary>
/// A read-only NBD server over TCP (fixed newstyle only): NBD_OPT_GO/INFO/EXPORT_NAME,
/// structured replies, <c>base:allocation</c>, STARTTLS with an optional FORCEDTLS policy;
/// READ, BLOCK_STATUS, FLUSH and DISC. Every limit is in <see cref="NbdServerOptions"/>; bad
/// input closes its own connection and nothing else.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly NbdServerOptions _options;
    private readonly Func<string, CancellationToken, ValueTask<IDiskImage?>> _resolve;
    private readonly ILogger<NbdServer> _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private readonly SslStreamCertificateContext? _certificate;
    private Socket? _listener;
    private Task _acceptLoop = Task.CompletedTask;
    private long _nextConnectionId;
    private int _active;

    /// <param name="options">Limits and TLS policy.</param>
    /// <param name="resolve">
    /// Chooses the disk behind an export name (the daemon's <c>/&lt;vdi-uuid&gt;?session_id=&lt;ref&gt;</c>), or
    /// refuses it: null means no such export (NBD_REP_ERR_UNKNOWN), an
    /// <see cref="UnauthorizedAccessException"/> means the caller may not have it
    /// (NBD_REP_ERR_POLICY). The server owns and disposes the image it is given.
    /// </param>
    /// <param name="logger">Structured logs; export names are logged without their query (it holds a session).</param>
    public NbdServer(NbdServerOptions options, Func<string, CancellationToken, ValueTask<IDiskImage?>> resolve, ILogger<NbdServer> logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConnections, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxRequestLength, 512);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxInFlightBytesPerConnection, options.MaxRequestLength);
        if (options.RequireTls && options.Certificate is null)
        {
            throw new ArgumentException("requiring TLS needs a certificate", nameof(options));
        }
        _options = options;
        _certificate = options.Certificate is null ? null : SslStreamCertificateContext.Create(options.Certificate, additionalCertificates: null, offline: true);
        _resolve = resolve;
        _logger = logger;
    }

    /// <summary>The bound address once <see cref="Start"/> has run (port 0 becomes the chosen port).</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint?)_listener?.LocalEndPoint ?? throw new InvalidOperationException("the NBD server is not started");

    /// <summary>Connections being served now.</summary>
    public int ActiveConnections => Volatile.Read(ref _active);

    /// <summary>Binds and starts accepting; returns the bound address.</summary>
    public IPEndPoint Start(IPEndPoint endpoint)
    {
        if (_listener is not null)
        {
            throw new InvalidOperationException("the NBD server is already started");
        }
        var listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6 && endpoint.Address.Equals(IPAddress.IPv6Any))
            {
                listener.DualMode = true;
            }
            listener.Bind(endpoint);
            listener.Listen(_options.MaxConnections * 2);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        _acceptLoop = Task.Run(AcceptLoopAsync);
        _logger.LogInformation("NBD server listening on {Endpoint} (TLS {TlsPolicy})", LocalEndPoint,
            _options.RequireTls ? "required" : _options.Certificate is null ? "unavailable" : "offered");
        return LocalEndPoint;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener!.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                // ECONNABORTED and friends concern one half-open connection, not the listener.
                _logger.LogWarning(ex, "NBD accept failed: {SocketError}", ex.SocketErrorCode);
                continue;
            }
            var id = Interlocked.Increment(ref _nextConnectionId);
            var remote = socket.RemoteEndPoint?.ToString() ?? "?";
            if (Interlocked.Increment(ref _active) > _options.MaxConnections)
            {
                Interlocked.Decrement(ref _active);
                _logger.LogWarning("NBD connection {Connection} from {Remote} refused: {Limit} connections are already served", id, remote, _options.MaxConnections);
                socket.Dispose();
                continue;
            }
            socket.NoDelay = true;
            _connections[id] = ServeSocketAsync(id, socket, remote);
        }
    }

    private async Task ServeSocketAsync(long id, Socket socket, string remote)
    {
        await Task.Yield();
        try
        {
            await using var stream = new NetworkStream(socket, ownsSocket: true);
            await ServeAsync(id, stream, remote, _stopping.Token).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _active);
            _connections.TryRemove(id, out _);
        }
    }

    /// <summary>Serves one already-accepted connection until it ends; never throws for the peer's faults.</summary>
    internal async Task ServeAsync(long id, Stream stream, string remote, CancellationToken cancellationToken)
    {
        var connection = new NbdServerConnection(id, remote, stream, _options, _certificate, _resolve, _logger);
        try
        {
            await connection.RunAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (cancellationToken.IsCancellationRequested)
        {
            _logger.LogDebug(ex, "NBD connection {Connection} from {Remote} closed by server shutdown", id, remote);
        }
        catch (Exception ex)
        {
            // The last line of defence: one broken connection must never stop the server.
            _logger.LogError(ex, "NBD connection {Connection} from {Remote} failed", id, remote);
        }
        finally
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }
        _stopping.Cancel();
        _listener?.Dispose();
        await _acceptLoop.ConfigureAwait(false);
        await Task.WhenAll(_connections.Values).ConfigureAwait(false);
        _stopping.Dispose();
    }
}
