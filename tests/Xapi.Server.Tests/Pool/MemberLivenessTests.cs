using System.Diagnostics;
using Xapi.Model;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Pool;

/// <summary>The master notices a member that stops, and notices it again when it comes back.</summary>
public class MemberLivenessTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    private static bool? LiveAtMaster(TestDaemon master, HostRef member)
    {
        var snapshot = master.Database.Snapshot;
        return snapshot.TryGet(member, out HostRecord host) && snapshot.TryGet(host.Metrics, out HostMetricsRecord metrics) ? metrics.Live : null;
    }

    /// <summary>Waits on the master's commits, not a clock, for the member's <c>live</c> to read <paramref name="live"/>.</summary>
    private static async Task UntilLiveAsync(TestDaemon master, HostRef member, bool live)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (LiveAtMaster(master, member) != live)
        {
            await master.Database.WhenVisibleAsync(master.Database.Snapshot.Generation + 1, limit.Token);
        }
    }

    [Test]
    public async Task A_stopped_member_is_marked_dead_within_the_timeout_and_alive_when_it_returns()
    {
        await using var pool = await PoolKit.JoinedAsync(2, (_, o) => o.MemberLivenessTimeout = Timeout);
        var master = pool.Hosts[0];
        var memberHost = PoolKit.HostOf(pool.Hosts[1]);
        await UntilLiveAsync(master, memberHost, true);

        await pool.Hosts[1].StopAsync();
        var clock = Stopwatch.StartNew();
        await UntilLiveAsync(master, memberHost, false);
        var noticed = clock.Elapsed;
        TestContext.Out.WriteLine($"member marked dead {noticed.TotalSeconds:F1} s after it stopped (timeout {Timeout.TotalSeconds} s)");
        Assert.That(noticed, Is.LessThan(Timeout + Timeout / 2), "the timeout and one check period at most");

        await pool.StartAgainAsync(1);
        await UntilLiveAsync(master, memberHost, true);
        Assert.That(pool.Hosts[1].Database.FollowsMaster, Is.True);
    }
    [Test]
    public async Task A_dead_member_can_be_destroyed_and_a_live_one_cannot()
    {
        await using var pool = await PoolKit.JoinedAsync(2, (_, o) => o.MemberLivenessTimeout = Timeout);
        var master = pool.Hosts[0];
        var memberHost = PoolKit.HostOf(pool.Hosts[1]);
        using var client = await master.LoginAsync();
        var masterHost = master.Service<Xapi.Server.Hosting.FirstBoot>().HostRef;

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("host.destroy", memberHost.Value), "HOST_IS_LIVE", memberHost.Value);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("host.destroy", masterHost), "HOST_IS_LIVE", masterHost);
        await pool.Hosts[1].StopAsync();
        await UntilLiveAsync(master, memberHost, false);

        var vm = await client.CreateVmAsync("for a dead host", withDevices: false);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.start_on", vm, memberHost.Value, false, false), "HOST_OFFLINE", memberHost.Value);

        await client.InvokeAsync("host.destroy", memberHost.Value);

        var snapshot = master.Database.Snapshot;
        Assert.Multiple(() =>
        {
            Assert.That(snapshot.All<HostRecord>().Select(h => h.Ref.Value), Is.EqualTo(new[] { masterHost }));
            Assert.That(snapshot.All<PBDRecord>().Where(p => p.Host == memberHost), Is.Empty);
            Assert.That(snapshot.All<VMRecord>().Count(v => v.IsControlDomain), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task A_member_declared_dead_is_disabled_and_its_VMs_start_elsewhere()
    {
        await using var pool = await PoolKit.JoinedAsync(2, (_, o) => o.MemberLivenessTimeout = Timeout);
        var master = pool.Hosts[0];
        var memberHost = PoolKit.HostOf(pool.Hosts[1]);
        using var client = await master.LoginAsync();
        var vm = await client.CreateVmAsync("on the member that dies", withDevices: false);
        await client.InvokeAsync("VM.start_on", vm, memberHost.Value, false, false);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("host.declare_dead", memberHost.Value), "HOST_IS_LIVE", memberHost.Value);

        await pool.Hosts[1].StopAsync();
        await UntilLiveAsync(master, memberHost, false);
        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"), "a dead member's VMs keep their state until it is declared dead");
        await client.InvokeAsync("host.declare_dead", memberHost.Value);

        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo("OpaqueRef:NULL"));
            Assert.That(await client.InvokeAsync("host.get_enabled", memberHost.Value), Is.EqualTo(false));
        });
        await client.InvokeAsync("VM.start", vm, false, false);
        Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(master.Service<Xapi.Server.Hosting.FirstBoot>().HostRef));
    }
}
