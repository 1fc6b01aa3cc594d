using System.Net.Sockets;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// The pool tests' topology: daemons on one machine, each on its own loopback address on one
/// port, each reporting that address as its host's address, as hosts of a real pool do theirs.
/// </summary>
public class PoolTopologyTests
{
    [Test]
    public async Task Hosts_on_their_own_loopback_addresses_share_a_port_and_each_reports_its_address()
    {
        await using var pool = await TestPool.StartAsync(3);
        var hostUuids = new HashSet<string>();
        var poolUuids = new HashSet<string>();
        for (var i = 0; i < pool.Hosts.Count; i++)
        {
            var daemon = pool.Hosts[i];
            Assert.That((daemon.Uri.Host, daemon.Uri.Port), Is.EqualTo((TestPool.AddressOf(i).ToString(), pool.Port)));
            using var client = await daemon.LoginAsync(RpcDialect.JsonRpcV2);
            var hosts = (IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!;
            Assert.That(hosts, Has.Count.EqualTo(1), "a fresh daemon is a pool of its own");
            Assert.That(await client.InvokeAsync("host.get_address", hosts[0]), Is.EqualTo(TestPool.AddressOf(i).ToString()));
            hostUuids.Add((string)(await client.InvokeAsync("host.get_uuid", hosts[0]))!);
            var pools = (IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!;
            poolUuids.Add((string)(await client.InvokeAsync("pool.get_uuid", pools[0]))!);
        }
        Assert.That((hostUuids.Count, poolUuids.Count), Is.EqualTo((3, 3)));

        // Each daemon holds its own address only: the next one along has nobody listening.
        using var stray = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var refused = await Assert.ThrowsAsync<SocketException>(async () => await stray.ConnectAsync(TestPool.AddressOf(pool.Hosts.Count), pool.Port));
        Assert.That(refused!.SocketErrorCode, Is.EqualTo(SocketError.ConnectionRefused));
    }
}
