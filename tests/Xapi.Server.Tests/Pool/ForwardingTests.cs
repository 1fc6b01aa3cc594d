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
    public async Task A_running_VM_s_devices_and_memory_are_changed_on_the_member_that_runs_it()
    {
        await using var pool = await PoolKit.JoinedAsync(2, (_, options) => options.SimulatedGuestAgentDelay = TimeSpan.Zero);
        var member = pool.Hosts[1];
        using var client = await pool.Hosts[0].LoginAsync();
        var vm = await VmAsync(client, "changed live");
        var uuid = Guid.Parse((string)(await client.InvokeAsync("VM.get_uuid", vm))!);
        await client.InvokeAsync("VM.start_on", vm, HostOf(member).Value, false, false);
        var vifRecord = ApiSchema.Class("VIF").MinimalRecord();
        vifRecord["VM"] = vm;
        vifRecord["network"] = ((IReadOnlyList<object?>)(await client.InvokeAsync("network.get_all"))!)[0];
        vifRecord["device"] = "1";
        vifRecord["MAC"] = "";
        vifRecord["MTU"] = "1500";
        var vif = (string)(await client.InvokeAsync("VIF.create", vifRecord))!;

        await client.InvokeAsync("VIF.plug", vif);
        await client.InvokeAsync("VM.set_memory_dynamic_range", vm, (200 * VmKit.MiB).ToString(), (256 * VmKit.MiB).ToString());

        var domain = await member.Service<Xapi.Xenops.IHypervisor>().TryGetDomainAsync(uuid);
        Assert.Multiple(async () =>
        {
            Assert.That(domain!.Vifs.Select(v => v.Device), Does.Contain(1), "the member's domain has the new VIF");
            Assert.That(domain.DynamicMin, Is.EqualTo(200 * VmKit.MiB), "the member's domain has the new range");
            Assert.That(await client.InvokeAsync("VIF.get_currently_attached", vif), Is.EqualTo(true));
        });

        await client.InvokeAsync("VIF.unplug", vif);
        domain = await member.Service<Xapi.Xenops.IHypervisor>().TryGetDomainAsync(uuid);
        Assert.That(domain!.Vifs.Select(v => v.Device), Does.Not.Contain(1));
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
