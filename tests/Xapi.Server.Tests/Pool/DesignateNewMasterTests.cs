using Xapi.Model;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Pool;

/// <summary><c>pool.designate_new_master</c>: an orderly hand-over, every host following the new master.</summary>
public class DesignateNewMasterTests
{
    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    [Test]
    public async Task Every_host_follows_the_designated_master_and_a_VM_running_on_a_member_stays_in_its_care()
    {
        await using var pool = await PoolKit.JoinedAsync(3);
        var (oldMaster, heir, other) = (pool.Hosts[0], pool.Hosts[1], pool.Hosts[2]);
        string vm;
        using (var client = await oldMaster.LoginAsync())
        {
            vm = await client.CreateVmAsync("runs through the hand-over", withDevices: false);
            await client.InvokeAsync("VM.start_on", vm, HostOf(other).Value, false, false);

            await client.InvokeAsync("pool.designate_new_master", HostOf(heir).Value);
        }

        foreach (var member in new[] { oldMaster, other })
        {
            await PoolJoinTests.ConvergedAsync(heir, member);
            Assert.That(member.Database.FollowsMaster, Is.True);
        }
        Assert.That(heir.Database.FollowsMaster, Is.False);
        using (var stray = oldMaster.Client())
        {
            await XenApiAssert.FailsAsync(() => stray.LoginAsync("root", TestDaemon.Password), "HOST_IS_SLAVE", TestPool.AddressOf(1).ToString());
        }
        using var master = await heir.LoginAsync();
        var poolRef = ((IReadOnlyList<object?>)(await master.InvokeAsync("pool.get_all"))!)[0];
        Assert.Multiple(async () =>
        {
            Assert.That(await master.InvokeAsync("pool.get_master", poolRef), Is.EqualTo(HostOf(heir).Value));
            Assert.That(await master.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"));
            Assert.That(await master.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(other).Value));
        });

        await master.InvokeAsync("VM.hard_shutdown", vm);

        Assert.That(await master.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"), "the new master forwards to the VM's host");
        await PoolJoinTests.ConvergedAsync(heir, oldMaster);
    }
}
