using System.Net;
using System.Net.Sockets;

namespace Xapi.Server.Tests;

/// <summary>
/// Several daemons on one machine, as the hosts of a pool: each its own data dir, simulator and
/// local SR, each bound to its own loopback address (127.0.0.2, 127.0.0.3, …) on one port, so
/// that a host's address is a plain address as on real pools. Nothing leaves 127.0.0.0/8.
/// </summary>
public sealed class TestPool : IAsyncDisposable
{
    private const int FirstHostOctet = 2;

    private readonly List<TestDaemon> _hosts;

    private TestPool(List<TestDaemon> hosts, int port)
    {
        _hosts = hosts;
        Port = port;
    }

    public IReadOnlyList<TestDaemon> Hosts => _hosts;

    /// <summary>Restarts the <paramref name="index"/>th host's daemon on its data dir and address.</summary>
    public async Task<TestDaemon> RestartAsync(int index) => _hosts[index] = await _hosts[index].RestartAsync();

    /// <summary>Starts the <paramref name="index"/>th host's daemon again after <see cref="TestDaemon.StopAsync"/>.</summary>
    public async Task<TestDaemon> StartAgainAsync(int index) => _hosts[index] = await _hosts[index].StartAgainAsync();

    /// <summary>The one port every host listens on.</summary>
    public int Port { get; }

    /// <summary>The loopback address of the <paramref name="index"/>th host (0: 127.0.0.2).</summary>
    public static IPAddress AddressOf(int index) => new([127, 0, 0, (byte)(FirstHostOctet + index)]);

    /// <summary>Starts <paramref name="count"/> fresh daemons, each a pool of its own until joined.</summary>
    public static async Task<TestPool> StartAsync(int count, Action<int, ServerOptions>? configure = null)
    {
        var port = FreePortOnAll(count);
        var hosts = new List<TestDaemon>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var index = i;
                hosts.Add(await TestDaemon.StartAsync(o =>
                {
                    o.ListenAddress = AddressOf(index).ToString();
                    o.HttpPort = port;
                    configure?.Invoke(index, o);
                }));
            }
        }
        catch
        {
            foreach (var host in hosts)
            {
                await host.DisposeAsync();
            }
            throw;
        }
        return new TestPool(hosts, port);
    }

    /// <summary>A port free on every host's address: the kernel picks one for the first, and the others are tried on it.</summary>
    public static int FreePortOnAll(int count)
    {
        for (var attempt = 0; attempt < 20; attempt++)
        {
            using var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            first.Bind(new IPEndPoint(AddressOf(0), 0));
            var port = ((IPEndPoint)first.LocalEndPoint!).Port;
            var others = new List<Socket>();
            try
            {
                for (var i = 1; i < count; i++)
                {
                    var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    others.Add(socket);
                    socket.Bind(new IPEndPoint(AddressOf(i), port));
                }
                return port;
            }
            catch (SocketException)
            {
                // Taken on one of the other addresses: another port.
            }
            finally
            {
                foreach (var socket in others)
                {
                    socket.Dispose();
                }
            }
        }
        throw new InvalidOperationException($"no port was free on all of 127.0.0.{FirstHostOctet}..{FirstHostOctet + count - 1}");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var host in Hosts)
        {
            await host.DisposeAsync();
        }
    }
}
