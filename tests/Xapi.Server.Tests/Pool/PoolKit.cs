using Xapi.Model;

namespace Xapi.Server.Tests.Pool;

/// <summary>What pool tests do: name a daemon's host, join daemons into the first one's pool.</summary>
public static class PoolKit
{
    public static HostRef HostOf(TestDaemon daemon) => new(daemon.Service<Xapi.Server.Hosting.FirstBoot>().HostRef);

    /// <summary><c>pool.join</c> on <paramref name="joiner"/>, to the pool whose master is the first host (127.0.0.2).</summary>
    public static async Task JoinAsync(TestDaemon joiner, string message = "pool.join", string password = TestDaemon.Password)
    {
        using var client = await joiner.LoginAsync();
        await client.InvokeAsync(message, TestPool.AddressOf(0).ToString(), "root", password);
    }

    /// <summary><paramref name="count"/> fresh daemons, all but the first joined into its pool.</summary>
    public static async Task<TestPool> JoinedAsync(int count, Action<int, ServerOptions>? configure = null)
    {
        var pool = await TestPool.StartAsync(count, configure);
        for (var i = 1; i < count; i++)
        {
            await JoinAsync(pool.Hosts[i]);
        }
        return pool;
    }
}
