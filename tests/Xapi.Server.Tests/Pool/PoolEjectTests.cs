using Xapi.Model;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Pool;

/// <summary><c>pool.eject</c>: the member becomes a pool of its own; the pool forgets it.</summary>
public class PoolEjectTests
{
    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    private static Task JoinAsync(TestDaemon joiner) => PoolKit.JoinAsync(joiner);

    [Test]
    public async Task An_ejected_member_becomes_a_pool_of_its_own_and_can_join_again()
    {
        await using var pool = await TestPool.StartAsync(2);
        var (master, member) = (pool.Hosts[0], pool.Hosts[1]);
        var memberHost = HostOf(member);
        var memberUuid = member.Database.Snapshot.Get(memberHost).Uuid;
        await JoinAsync(member);
        using var client = await master.LoginAsync();

        await client.InvokeAsync("pool.eject", memberHost.Value);

        var pooled = master.Database.Snapshot;
        var own = member.Database.Snapshot;
        Assert.Multiple(() =>
        {
            Assert.That(pooled.All<HostRecord>().Select(h => h.Ref), Is.EqualTo(new[] { HostOf(master) }), "the pool forgot the host");
            Assert.That(pooled.All<PBDRecord>().Where(p => p.Host == memberHost), Is.Empty);
            Assert.That(pooled.All<VMRecord>().Where(v => v.IsControlDomain && v.ResidentOn == memberHost), Is.Empty);
            Assert.That(pooled.All<HostMetricsRecord>().Count(), Is.EqualTo(1));
            Assert.That(member.Database.FollowsMaster, Is.False);
            Assert.That(own.All<HostRecord>().Select(h => h.Uuid), Is.EqualTo(new[] { memberUuid }), "the same host, alone");
            Assert.That(own.All<PoolRecord>().Single().Uuid, Is.Not.EqualTo(pooled.All<PoolRecord>().Single().Uuid), "a pool of its own");
            Assert.That(own.All<PoolRecord>().Single().Master, Is.EqualTo(memberHost));
            Assert.That(own.All<VMRecord>().Count(v => v.IsControlDomain), Is.EqualTo(1));
            Assert.That(own.All<PBDRecord>().Where(p => own.Get(p.SR).Type == "ext").Select(p => p.CurrentlyAttached), Is.EqualTo(new[] { true }),
                "its local SR, already on disk, attached again");
        });
        using (var direct = await member.LoginAsync())
        {
            Assert.That(await direct.InvokeAsync("host.get_all"), Has.Count.EqualTo(1), "clients log in to it again");
        }

        await JoinAsync(member);

        Assert.That(master.Database.Snapshot.All<HostRecord>().Select(h => h.Uuid).ToList(), Does.Contain(memberUuid).And.Count.EqualTo(2));
    }

    [Test]
    public async Task The_master_cannot_be_ejected()
    {
        await using var pool = await TestPool.StartAsync(2);
        await JoinAsync(pool.Hosts[1]);
        using var client = await pool.Hosts[0].LoginAsync();

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("pool.eject", HostOf(pool.Hosts[0]).Value), "INTERNAL_ERROR", "Cannot_eject_master");
    }

    [Test]
    public async Task A_member_running_a_VM_cannot_be_ejected()
    {
        await using var pool = await TestPool.StartAsync(2);
        await JoinAsync(pool.Hosts[1]);
        using var client = await pool.Hosts[0].LoginAsync();
        var vm = await client.CreateVmAsync("keeps its host", withDevices: false);
        await client.InvokeAsync("VM.start_on", vm, HostOf(pool.Hosts[1]).Value, false, false);

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("pool.eject", HostOf(pool.Hosts[1]).Value), "OPERATION_NOT_ALLOWED", "VM resident on host");

        Assert.That(pool.Hosts[1].Database.FollowsMaster, Is.True);
    }
}
