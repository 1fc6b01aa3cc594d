using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// VM operations in a pool, called at the master: each runs on the member that holds the VM
/// (or that the master picks to start it), and the pool's database says so on every host.
/// </summary>
public class ForwardingTests
{
    private static Task<TestPool> PoolOfAsync(int count) => PoolKit.JoinedAsync(count);

    private static Task<string> VmAsync(XenApiClient client, string name) => client.CreateVmAsync(name, withDevices: false);

    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    /// <summary>The VMs each host's own hypervisor runs, by the uuids its simulator knows.</summary>
    private static async Task<IReadOnlyList<Guid>> DomainsOnAsync(TestDaemon daemon) =>
        (await daemon.Service<Xapi.Xenops.IHypervisor>().ListDomainsAsync()).Select(d => d.Uuid).ToList();

    [Test]
    public async Task Start_on_a_member_runs_the_VM_there_and_its_shutdown_goes_back_there()
    {
        await using var pool = await PoolOfAsync(2);
        var (master, member) = (pool.Hosts[0], pool.Hosts[1]);
        using var client = await master.LoginAsync();
        var vm = await VmAsync(client, "on the member");
        var uuid = Guid.Parse((string)(await client.InvokeAsync("VM.get_uuid", vm))!);

        await client.InvokeAsync("VM.start_on", vm, HostOf(member).Value, false, false);

        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"));
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(member).Value));
            Assert.That(await DomainsOnAsync(member), Does.Contain(uuid), "the member's hypervisor runs it");
            Assert.That(await DomainsOnAsync(master), Does.Not.Contain(uuid));
            Assert.That(await client.InvokeAsync("VM.get_current_operations", vm), Is.Empty);
        });

        await client.InvokeAsync("VM.hard_shutdown", vm);

        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
            Assert.That(await DomainsOnAsync(member), Does.Not.Contain(uuid));
        });
    }

    [Test]
    public async Task Start_without_a_host_spreads_VMs_over_the_pool_by_free_memory()
    {
        await using var pool = await PoolOfAsync(3);
        using var client = await pool.Hosts[0].LoginAsync(RpcDialect.JsonRpcV2);
        var vms = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            vms.Add(await VmAsync(client, $"spread {i}"));
        }

        var clock = Stopwatch.StartNew();
        foreach (var vm in vms)
        {
            await client.InvokeAsync("VM.start", vm, false, false);
        }
        TestContext.Out.WriteLine($"3 starts through the master: {clock.Elapsed.TotalMilliseconds / 3:F0} ms each");

        var residents = new List<object?>();
        foreach (var vm in vms)
        {
            residents.Add(await client.InvokeAsync("VM.get_resident_on", vm));
        }
        Assert.That(residents, Is.EquivalentTo(pool.Hosts.Select(h => HostOf(h).Value)), "one VM on each host: each start took the host with the most free memory");
    }

    [Test]
    public async Task An_async_start_on_a_member_completes_its_task_at_the_master()
    {
        await using var pool = await PoolOfAsync(2);
        using var client = await pool.Hosts[0].LoginAsync();
        var vm = await VmAsync(client, "async");

        var task = (string)(await client.InvokeAsync("Async.VM.start_on", vm, HostOf(pool.Hosts[1]).Value, false, false))!;

        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var token = "";
        while ((string)(await client.InvokeAsync("task.get_status", task))! == "pending")
        {
            token = (await client.FromAsync([$"task/{task}"], token, 5)).Token;
            limit.Token.ThrowIfCancellationRequested();
        }
        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("task.get_status", task), Is.EqualTo("success"));
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(pool.Hosts[1]).Value));
        });
    }

    [Test]
    public async Task A_member_that_cannot_be_reached_is_cannot_contact_host()
    {
        await using var pool = await PoolOfAsync(2);
        using var client = await pool.Hosts[0].LoginAsync();
        var vm = await VmAsync(client, "nowhere to go");
        var member = HostOf(pool.Hosts[1]).Value;
        await pool.Hosts[1].StopAsync();

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.start_on", vm, member, false, false), "CANNOT_CONTACT_HOST", member);

        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
    }
}
