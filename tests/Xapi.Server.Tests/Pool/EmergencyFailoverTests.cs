using Xapi.Model;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// A master lost with the journal backend: failover is by hand, as on real pools without HA. A
/// member is made master with its copy, the other member is pointed at it, and the old master,
/// back, is pointed at it too.
/// </summary>
public class EmergencyFailoverTests
{
    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    [Test]
    public async Task A_member_made_master_by_hand_keeps_the_pool_and_the_others_follow_it()
    {
        await using var pool = await PoolKit.JoinedAsync(3, (_, o) => o.MemberLivenessTimeout = TimeSpan.FromSeconds(2));
        var (oldMaster, heir, other) = (pool.Hosts[0], pool.Hosts[1], pool.Hosts[2]);
        using (var client = await oldMaster.LoginAsync())
        {
            var poolRef = ((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0];
            await client.InvokeAsync("pool.set_name_label", poolRef, "acknowledged before the master died");
        }
        await PoolJoinTests.ConvergedAsync(oldMaster, heir);
        await oldMaster.StopAsync();

        using (var local = heir.Client())
        {
            var session = await local.CallAsync("session.slave_local_login_with_password", ["root", TestDaemon.Password]);
            await local.CallAsync("pool.emergency_transition_to_master", [session]);
        }
        using var master = await heir.LoginAsync();
        var recovered = await master.InvokeAsync("pool.recover_slaves");

        Assert.That(recovered, Is.EqualTo(new[] { HostOf(other).Value }), "the dead old master cannot be recovered");
        var poolRef2 = ((IReadOnlyList<object?>)(await master.InvokeAsync("pool.get_all"))!)[0];
        Assert.Multiple(async () =>
        {
            Assert.That(await master.InvokeAsync("pool.get_master", poolRef2), Is.EqualTo(HostOf(heir).Value));
            Assert.That(await master.InvokeAsync("pool.get_name_label", poolRef2), Is.EqualTo("acknowledged before the master died"));
        });
        await master.InvokeAsync("pool.set_name_description", poolRef2, "written at the new master");
        await PoolJoinTests.ConvergedAsync(heir, other);
        using (var stray = other.Client())
        {
            await XenApiAssert.FailsAsync(() => stray.LoginAsync("root", TestDaemon.Password), "HOST_IS_SLAVE", TestPool.AddressOf(1).ToString());
        }

        // The old master comes back as the master of its stale pool, and is pointed at the new one.
        var returned = await pool.StartAgainAsync(0);
        using (var client = await returned.LoginAsync())
        {
            await client.InvokeAsync("pool.emergency_reset_master", TestPool.AddressOf(1).ToString());
        }
        await PoolJoinTests.ConvergedAsync(heir, returned);
        Assert.Multiple(() =>
        {
            Assert.That(returned.Database.FollowsMaster, Is.True);
            Assert.That(returned.Database.Snapshot.All<PoolRecord>().Single().NameDescription, Is.EqualTo("written at the new master"));
        });
    }
}
