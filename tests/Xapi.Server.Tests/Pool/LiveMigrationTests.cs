using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Pool;
using Xapi.Server.Tests.Api.VM;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// VM.pool_migrate between members of a pool on shared storage: the guest moves live (its counter,
/// console and disk go on where they were), exactly one host has its domain afterwards, and a
/// migration that fails leaves the guest running where it was.
/// </summary>
public class LiveMigrationTests
{
    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    private static SimulatorBackend Backend(TestDaemon daemon) => (SimulatorBackend)daemon.Service<IHypervisor>();

    [Test]
    public async Task A_running_VM_moves_live_from_member_to_member_and_back_through_the_master()
    {
        // Guests whose agent runs at once, so it can be seen to come along.
        await using var pool = await PoolKit.JoinedAsync(3, (_, options) => options.SimulatedGuestAgentDelay = TimeSpan.Zero);
        var shared = Directory.CreateTempSubdirectory("xapi-shared-sr-").FullName;
        using var cleanup = new DirectoryCleanup(shared);
        using var client = await pool.Hosts[0].LoginAsync();
        var sr = await SharedSrAsync(client, pool, shared);
        var vm = await client.CreateVmAsync("travelling", sr: sr);
        var uuid = Guid.Parse((string)(await client.InvokeAsync("VM.get_uuid", vm))!);
        await client.InvokeAsync("VM.start_on", vm, HostOf(pool.Hosts[1]).Value, false, false);
        Assert.That(await Backend(pool.Hosts[1]).RunWorkloadStepAsync(uuid), Is.True, "the guest writes its disk before it moves");
        var before = await Backend(pool.Hosts[1]).TryGetDomainAsync(uuid);
        var outcomes = new List<MigrationOutcome>();
        pool.Hosts[1].Service<LiveMigration>().Completed += (_, outcome) => outcomes.Add(outcome);

        await client.InvokeAsync("VM.pool_migrate", vm, HostOf(pool.Hosts[2]).Value, new Dictionary<string, object?> { ["live"] = "true" });

        Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(pool.Hosts[2]).Value));
        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"));
        var after = await Backend(pool.Hosts[2]).TryGetDomainAsync(uuid);
        Assert.Multiple(() =>
        {
            Assert.That(after, Is.Not.Null, "the destination runs the guest");
            Assert.That(after!.PowerState, Is.EqualTo(DomainPowerState.Running));
            Assert.That(after.GuestCounter, Is.GreaterThanOrEqualTo(before!.GuestCounter), "the guest's clock went on, not from zero");
            Assert.That(after.ConsoleText, Does.Contain("resumed after a live migration"));
            Assert.That(after.GuestAgent, Is.Not.Null, "its agent came along");
            Assert.That(after.Vbds.Select(v => v.Device), Is.EquivalentTo(before.Vbds.Select(v => v.Device)));
            Assert.That(outcomes, Has.Count.EqualTo(1));
            Assert.That(outcomes[0].PagesPerRound[0], Is.EqualTo(256L * 1024 * 1024 / 4096), "the first round sends every page of 256 MiB");
            Assert.That(outcomes[0].Downtime, Is.LessThan(outcomes[0].Duration), "the guest ran while most of it moved");
        });
        Assert.That(await Backend(pool.Hosts[1]).TryGetDomainAsync(uuid), Is.Null, "the source has no domain left");
        Assert.That(await Backend(pool.Hosts[2]).RunWorkloadStepAsync(uuid), Is.True, "the guest writes its disk on the new host");
        var messages = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("message.get_all_records"))!;
        Assert.That(messages.Values.Cast<IReadOnlyDictionary<string, object?>>().Any(m => (string?)m["name"] == "VM_MIGRATED"
            && ((string)m["body"]!).Contains($"to host '{pool.Hosts[2].Database.Snapshot.Get(HostOf(pool.Hosts[2])).NameLabel}'", StringComparison.Ordinal)), Is.True);

        // And on to the master, the VM's writes coming from the member that sends it.
        await client.InvokeAsync("VM.pool_migrate", vm, HostOf(pool.Hosts[0]).Value, new Dictionary<string, object?>());
        Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(pool.Hosts[0]).Value));
        Assert.That(await Backend(pool.Hosts[0]).TryGetDomainAsync(uuid), Is.Not.Null);
        Assert.That(await Backend(pool.Hosts[2]).TryGetDomainAsync(uuid), Is.Null);
        await client.InvokeAsync("VM.clean_shutdown", vm);
        Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task A_VM_whose_disk_the_destination_cannot_reach_is_refused_before_anything_moves()
    {
        await using var pool = await PoolKit.JoinedAsync(2);
        using var client = await pool.Hosts[0].LoginAsync();
        // The master's own local SR: a disk there is out of the member's reach.
        var snapshot = pool.Hosts[0].Database.Snapshot;
        var local = snapshot.All<PBDRecord>().Where(p => p.Host == HostOf(pool.Hosts[0])).Select(p => snapshot.Get(p.SR)).Single(sr => sr.Type == "ext");
        var vm = await VmKit.CreateVmAsync(client, "local disk", sr: local.Ref.Value);
        await client.InvokeAsync("VM.start_on", vm, HostOf(pool.Hosts[0]).Value, false, false);
        var vbd = ((IReadOnlyList<object?>)(await client.InvokeAsync("VM.get_VBDs", vm))!)[0];
        var sr = (string)(await client.InvokeAsync("VDI.get_SR", await client.InvokeAsync("VBD.get_VDI", vbd)))!;

        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.pool_migrate", vm, HostOf(pool.Hosts[1]).Value, new Dictionary<string, object?>()),
            ErrorCodes.VmRequiresSr, vm, sr);
        Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(pool.Hosts[0]).Value));
    }

    [Test]
    public async Task A_destination_that_stops_mid_stream_leaves_the_guest_running_where_it_was()
    {
        await using var pool = await PoolKit.JoinedAsync(3);
        var shared = Directory.CreateTempSubdirectory("xapi-shared-sr-").FullName;
        using var cleanup = new DirectoryCleanup(shared);
        using var client = await pool.Hosts[0].LoginAsync();
        var sr = await SharedSrAsync(client, pool, shared);
        // Large enough that the stream is still moving when the destination goes.
        var vm = await client.CreateVmAsync("stays", edit: r => r["memory_static_max"] = r["memory_dynamic_max"] = r["memory_dynamic_min"] = (2048 * VmKit.MiB).ToString(), sr: sr);
        var uuid = Guid.Parse((string)(await client.InvokeAsync("VM.get_uuid", vm))!);
        await client.InvokeAsync("VM.start_on", vm, HostOf(pool.Hosts[1]).Value, false, false);
        var destination = HostOf(pool.Hosts[2]).Value;
        using var watching = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var arriving = WaitForDomainAsync(Backend(pool.Hosts[2]), uuid, watching.Token);

        var migrating = client.InvokeAsync("VM.pool_migrate", vm, destination, new Dictionary<string, object?>());
        await arriving;
        await pool.Hosts[2].StopAsync();

        await XenApiAssert.FailsAsync(() => migrating, ErrorCodes.VmMigrateFailed);
        var domain = await Backend(pool.Hosts[1]).TryGetDomainAsync(uuid);
        Assert.Multiple(async () =>
        {
            Assert.That(domain?.PowerState, Is.EqualTo(DomainPowerState.Running), "the guest runs on at its source, unpaused");
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(pool.Hosts[1]).Value));
            Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"));
        });

        // Back, the destination has no domain of it: the guest is on one host only.
        await pool.StartAgainAsync(2);
        Assert.That(await Backend(pool.Hosts[2]).TryGetDomainAsync(uuid), Is.Null);
        Assert.That(Directory.Exists(Path.Combine(pool.Hosts[2].Service<Xapi.Server.Hosting.ServerOptions>().DataDir, "migrations"))
            && Directory.EnumerateFiles(Path.Combine(pool.Hosts[2].Service<Xapi.Server.Hosting.ServerOptions>().DataDir, "migrations")).Any(), Is.False,
            "no migration is left in flight");
    }

    private static async Task WaitForDomainAsync(SimulatorBackend backend, Guid uuid, CancellationToken cancellationToken)
    {
        await foreach (var change in backend.WatchAsync(cancellationToken))
        {
            if (change.State.Uuid == uuid && change.Kind == DomainEventKind.Created)
            {
                return;
            }
        }
    }

    private static async Task<string> SharedSrAsync(XenApiClient client, TestPool pool, string location) =>
        (string)(await client.InvokeAsync("SR.create", HostOf(pool.Hosts[0]).Value,
            new Dictionary<string, object?> { ["location"] = location }, "0", "pool storage", "", "ext", "user", true, new Dictionary<string, object?>()))!;
}
