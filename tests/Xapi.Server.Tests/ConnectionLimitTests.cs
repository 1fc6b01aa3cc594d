using System.Net.Sockets;

namespace Xapi.Server.Tests;

public class ConnectionLimitTests
{
    [Test]
    public async Task A_connection_that_sends_nothing_is_closed_after_the_idle_timeout()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.IdleConnectionTimeout = TimeSpan.FromSeconds(1));
        using var idle = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await idle.ConnectAsync("127.0.0.1", daemon.Uri.Port);
        var buffer = new byte[16];
        var read = await idle.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(read, Is.Zero, "the daemon closes the connection");
    }

    [Test]
    public async Task Responses_tell_keep_alive_clients_when_an_idle_connection_will_be_closed()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.IdleConnectionTimeout = TimeSpan.FromSeconds(7));
        using var http = new HttpClient();
        using var reply = await http.PostAsync(daemon.Uri, new StringContent("<methodCall><methodName>session.get_all_subject_identifiers</methodName><params/></methodCall>"));
        Assert.That(reply.Headers.TryGetValues("Keep-Alive", out var hint) ? string.Join(",", hint) : null, Is.EqualTo("timeout=7"));
    }

    [Test]
    public async Task A_listener_at_its_limit_serves_a_new_client_once_a_connection_closes()
    {
        await using var daemon = await TestDaemon.StartAsync(o =>
        {
            o.MaxConnections = 3;
            o.UnixSocket = "";
        });
        var held = new List<Socket>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                held.Add(socket);
                await socket.ConnectAsync("127.0.0.1", daemon.Uri.Port);
            }
            using var client = daemon.Client(Xapi.Protocol.RpcDialect.JsonRpcV2);
            var login = client.LoginAsync("root", TestDaemon.Password);
            var finished = await Task.WhenAny(login, Task.Delay(TimeSpan.FromSeconds(1)));
            Assert.That(finished, Is.Not.SameAs(login), "a fourth connection waits while three are held");
            held[0].Dispose();
            Assert.That(await login.WaitAsync(TimeSpan.FromSeconds(10)), Does.StartWith("OpaqueRef:"));
        }
        finally
        {
            foreach (var socket in held)
            {
                socket.Dispose();
            }
        }
    }
}
