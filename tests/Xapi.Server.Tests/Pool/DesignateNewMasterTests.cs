using Xapi.Model;

namespace Xapi.Server.Tests.Pool;

/// <summary><c>pool.designate_new_master</c>: an orderly hand-over, every host following the new master.</summary>
public class DesignateNewMasterTests
{
    private const long MiB = 1L << 20;

    private static HostRef HostOf(TestDaemon daemon) => new(daemon.Service<Xapi.Server.Hosting.FirstBoot>().HostRef);

    [Test]
    public async Task Every_host_follows_the_designated_master_and_a_VM_running_on_a_member_stays_in_its_care()
    {
        await using var pool = await TestPool.StartAsync(3);
        var (oldMaster, heir, other) = (pool.Hosts[0], pool.Hosts[1], pool.Hosts[2]);
        foreach (var member in new[] { heir, other })
        {
            using var joining = await member.LoginAsync();
            await joining.InvokeAsync("pool.join", TestPool.AddressOf(0).ToString(), "root", TestDaemon.Password);
        }
        string vm;
        using (var client = await oldMaster.LoginAsync())
        {
            var record = ApiSchema.Class("VM").MinimalRecord();
            record["name_label"] = "runs through the hand-over";
            record["memory_static_min"] = (128 * MiB).ToString();
            record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (256 * MiB).ToString();
            record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
            vm = (string)(await client.InvokeAsync("VM.create", record))!;
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
