using System.Diagnostics;
using Xapi.Protocol;
using Xapi.Server.Tests;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// Two daemon processes as a pool on 127.0.0.2 and 127.0.0.3: the member is SIGKILLed, the
/// master notices, the pool goes on, and the member, started again, takes the pool database again.
/// </summary>
public class PoolMemberKillTests
{
    private const string Password = "pool-kill";
    private static readonly TimeSpan LivenessTimeout = TimeSpan.FromSeconds(2);

    private static Task<DaemonProcess> StartAsync(string dataDir, string address, int port) =>
        DaemonProcess.StartAsync(dataDir, Password, "--listen", address, "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--member-liveness-timeout", LivenessTimeout.ToString());

    /// <summary>The member's host_metrics.live as the master holds it.</summary>
    private static async Task<bool> LiveAsync(XenApiClient master, string host) =>
        (bool)(await master.InvokeAsync("host_metrics.get_live", (await master.InvokeAsync("host.get_metrics", host))!))!;

    /// <summary>Waits on the master's events (not a clock) until the member's live flag reads <paramref name="live"/>.</summary>
    private static async Task UntilLiveAsync(XenApiClient master, string host, bool live)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var token = "";
        while (await LiveAsync(master, host) != live)
        {
            limit.Token.ThrowIfCancellationRequested();
            var batch = (IReadOnlyDictionary<string, object?>)(await master.InvokeAsync("event.from", new object?[] { "host_metrics" }, token, 5.0))!;
            token = (string)batch["token"]!;
        }
    }

    [Test]
    public async Task A_killed_member_is_marked_dead_and_started_again_it_takes_the_pool_database_again()
    {
        var port = TestPool.FreePortOnAll(2);
        var masterDir = Directory.CreateTempSubdirectory("xapi-pool-master-").FullName;
        var memberDir = Directory.CreateTempSubdirectory("xapi-pool-member-").FullName;
        using var cleanMaster = new DirectoryCleanup(masterDir);
        using var cleanMember = new DirectoryCleanup(memberDir);
        using var masterProcess = await StartAsync(masterDir, "127.0.0.2", port);
        var member = await StartAsync(memberDir, "127.0.0.3", port);
        string memberHost;
        using (var joining = new XenApiClient(new Uri($"http://127.0.0.3:{port}/")))
        {
            await joining.LoginAsync("root", Password);
            memberHost = (string)((IReadOnlyList<object?>)(await joining.InvokeAsync("host.get_all"))!)[0]!;
            await joining.InvokeAsync("pool.join", "127.0.0.2", "root", Password);
        }
        using var master = new XenApiClient(new Uri($"http://127.0.0.2:{port}/"));
        await master.LoginAsync("root", Password);
        await UntilLiveAsync(master, memberHost, true);

        member.Kill();
        var clock = Stopwatch.StartNew();
        await UntilLiveAsync(master, memberHost, false);
        TestContext.Out.WriteLine($"SIGKILLed member marked dead after {clock.Elapsed.TotalSeconds:F1} s (timeout {LivenessTimeout.TotalSeconds} s)");
        var poolRef = ((IReadOnlyList<object?>)(await master.InvokeAsync("pool.get_all"))!)[0];
        await master.InvokeAsync("pool.set_name_label", poolRef, "renamed while the member was dead");

        member.Dispose();
        using var restarted = await StartAsync(memberDir, "127.0.0.3", port);
        await UntilLiveAsync(master, memberHost, true);

        // The member's own copy, read through an administrator's local login on it.
        using var local = new XenApiClient(new Uri($"http://127.0.0.3:{port}/"));
        var session = await local.CallAsync("session.slave_local_login_with_password", ["root", Password]);
        var copy = await local.CallAsync("pool.get_name_label", [session, poolRef]);
        Assert.Multiple(() =>
        {
            Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)));
            Assert.That(copy, Is.EqualTo("renamed while the member was dead"));
        });
        await XenApiAssert.FailsAsync(() => local.LoginAsync("root", Password), "HOST_IS_SLAVE", "127.0.0.2");
    }
}
