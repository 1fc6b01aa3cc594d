using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;

namespace Xapi.Server.Hosting;

/// <summary>
/// Kestrel's socket transport, with the accept loop of real hosts' HTTP server: a listener
/// holds at most a fixed number of connections and, when full, stops accepting (new clients
/// wait in the kernel's backlog) instead of accepting until the process runs out of file
/// descriptors; and an accept that fails for lack of resources (<c>EMFILE</c>, <c>ENFILE</c>,
/// <c>ENOBUFS</c>) backs off instead of retrying at once, which is what spun Kestrel's own
/// loop at 100 % CPU.
/// </summary>
public sealed class BoundedListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IDisposable
{
    private const int Backlog = 512;
    private readonly SocketConnectionContextFactory _contexts;
    private readonly Func<int> _limitPerListener;
    private readonly ILogger _logger;

    /// <param name="limitPerListener">The connections each listener may hold, read when it binds.</param>
    /// <param name="memoryPools">Kestrel's own buffer pools; its HTTP layer relies on their block size.</param>
    public BoundedListenerFactory(Func<int> limitPerListener, ILoggerFactory loggers, IMemoryPoolFactory<byte>? memoryPools)
    {
        _limitPerListener = limitPerListener;
        _logger = loggers.CreateLogger<BoundedListenerFactory>();
        var options = new SocketConnectionFactoryOptions();
        if (memoryPools is not null)
        {
            // Not public on these options, which otherwise give connections the shared array
            // pool: with it Kestrel's response writer failed to write replies. A framework that
            // renamed the property must stop the daemon here, not break every reply.
            var property = typeof(SocketConnectionFactoryOptions)
                .GetProperty("MemoryPoolFactory", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)
                ?? throw new InvalidOperationException("this ASP.NET Core version has no SocketConnectionFactoryOptions.MemoryPoolFactory; update BoundedListenerFactory");
            property.SetValue(options, memoryPools);
        }
        _contexts = new SocketConnectionContextFactory(options, _logger);
    }

    /// <summary>How long an accept that failed for lack of resources waits before the next one.</summary>
    public static TimeSpan AcceptBackoff { get; } = TimeSpan.FromSeconds(1);

    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint or UnixDomainSocketEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var socket = SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        socket.Listen(Backlog);
        var limit = Math.Max(1, _limitPerListener());
        return ValueTask.FromResult<IConnectionListener>(new Listener(socket, limit, _contexts, _logger));
    }

    public void Dispose() => _contexts.Dispose();

    private sealed class Listener(Socket socket, int limit, SocketConnectionContextFactory contexts, ILogger logger) : IConnectionListener
    {
        private readonly SemaphoreSlim _slots = new(limit, limit);
        private readonly CancellationTokenSource _stopping = new();
        private long _lastBusyWarningTicks;

        public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token);
            var stop = linked.Token;
            while (true)
            {
                try
                {
                    if (!_slots.Wait(0))
                    {
                        WarnBusy();
                        await _slots.WaitAsync(stop).ConfigureAwait(false);
                    }
                }
                catch (OperationCanceledException)
                {
                    return null;
                }
                Socket accepted;
                try
                {
                    accepted = await socket.AcceptAsync(stop).ConfigureAwait(false);
                }
                catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException
                    || e is SocketException { SocketErrorCode: SocketError.OperationAborted })
                {
                    _slots.Release();
                    return null;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
                {
                    // Reset while waiting in the backlog: nothing to serve, take the next one.
                    _slots.Release();
                    continue;
                }
                catch (SocketException e)
                {
                    _slots.Release();
                    logger.LogWarning("Accepting a connection on {EndPoint} failed ({Error}); retrying in {Backoff}",
                        EndPoint, e.SocketErrorCode, AcceptBackoff);
                    try
                    {
                        await Task.Delay(AcceptBackoff, stop).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return null;
                    }
                    continue;
                }
                if (accepted.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
                {
                    accepted.NoDelay = true;
                }
                return new SlottedConnection(contexts.Create(accepted), _slots);
            }
        }

        // Once a minute at most: a flood must not turn into a flood of log lines.
        private void WarnBusy()
        {
            var now = Environment.TickCount64;
            var last = Interlocked.Read(ref _lastBusyWarningTicks);
            if ((last == 0 || now - last > 60_000) && Interlocked.CompareExchange(ref _lastBusyWarningTicks, now, last) == last)
            {
                logger.LogWarning("{EndPoint} holds its limit of {Limit} connections; new ones wait until one closes", EndPoint, limit);
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _stopping.Cancel();
            socket.Dispose();
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _stopping.Cancel();
            socket.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A connection that gives its listener's slot back when Kestrel disposes it.</summary>
    private sealed class SlottedConnection(ConnectionContext inner, SemaphoreSlim slots) : ConnectionContext
    {
        private int _released;

        public override string ConnectionId
        {
            get => inner.ConnectionId;
            set => inner.ConnectionId = value;
        }

        public override IFeatureCollection Features => inner.Features;

        public override IDictionary<object, object?> Items
        {
            get => inner.Items;
            set => inner.Items = value;
        }

        public override IDuplexPipe Transport
        {
            get => inner.Transport;
            set => inner.Transport = value;
        }

        public override EndPoint? LocalEndPoint
        {
            get => inner.LocalEndPoint;
            set => inner.LocalEndPoint = value;
        }

        public override EndPoint? RemoteEndPoint
        {
            get => inner.RemoteEndPoint;
            set => inner.RemoteEndPoint = value;
        }

        public override CancellationToken ConnectionClosed
        {
            get => inner.ConnectionClosed;
            set => inner.ConnectionClosed = value;
        }

        public override void Abort() => inner.Abort();

        public override void Abort(ConnectionAbortedException abortReason) => inner.Abort(abortReason);

        public override async ValueTask DisposeAsync()
        {
            try
            {
                await inner.DisposeAsync().ConfigureAwait(false);
            }
            finally
            {
                if (Interlocked.Exchange(ref _released, 1) == 0)
                {
                    slots.Release();
                }
            }
        }
    }
}
