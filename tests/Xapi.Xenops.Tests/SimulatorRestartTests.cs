using Xapi.Xenops.Simulator;
using static Xapi.Xenops.Tests.Sim;

namespace Xapi.Xenops.Tests;

public sealed class SimulatorRestartTests
{
    private string _directory = null!;

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("xenops-state-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private SimulatorOptions Options => new() { StatePath = Path.Combine(_directory, "domains.json"), HostMemoryBytes = 8 * GiB, HostOverheadBytes = GiB };

    [Test]
    public async Task A_new_backend_on_the_same_state_file_finds_the_domains_again()
    {
        var clock = new ManualClock();
        IReadOnlyList<DomainState> before;
        HostMemoryInfo memoryBefore;
        using (var sim = new SimulatorBackend(Options, clock))
        {
            await StartAsync(sim, Vm(1, dynamicMin: GiB, dynamicMax: 2 * GiB) with { Vbds = [new VbdConfig("xvda", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("vdi-1"))] });
            await StartAsync(sim, Vm(2));
            clock.Advance(TimeSpan.FromSeconds(7));
            sim.TriggerGuestShutdown(Id(2), ShutdownReason.Crash);
            before = await sim.ListDomainsAsync();
            memoryBefore = await sim.GetHostMemoryAsync();
        }

        var restartedClock = new ManualClock();
        using var restarted = new SimulatorBackend(Options, restartedClock);
        var after = await restarted.ListDomainsAsync();
        restartedClock.Advance(TimeSpan.FromSeconds(3));

        Assert.Multiple(async () =>
        {
            Assert.That(
                after.Select(d => (d.Uuid, d.DomId, d.PowerState, d.ShutdownReason, d.MemoryActual, d.GuestCounter, d.Vbds.Count, d.Vifs.Count)),
                Is.EqualTo(before.Select(d => (d.Uuid, d.DomId, d.PowerState, d.ShutdownReason, d.MemoryActual, d.GuestCounter, d.Vbds.Count, d.Vifs.Count))));
            Assert.That(after[0].GuestAgent, Is.Not.Null);
            Assert.That(after[0].ConsoleText, Is.EqualTo(before[0].ConsoleText));
            Assert.That((await restarted.GetHostMemoryAsync()).Free, Is.EqualTo(memoryBefore.Free));
            Assert.That((await restarted.TryGetDomainAsync(Id(1)))!.GuestCounter, Is.EqualTo(10), "the guest keeps running");
            Assert.That((await restarted.CreateAsync(Vm(3))).DomId, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task A_destroyed_domain_is_gone_after_a_restart()
    {
        using (var sim = new SimulatorBackend(Options, new ManualClock()))
        {
            await StartAsync(sim, Vm(1));
            await sim.DestroyAsync(Id(1));
        }

        using var restarted = new SimulatorBackend(Options, new ManualClock());
        Assert.That(await restarted.ListDomainsAsync(), Is.Empty);
    }

    [Test]
    public void A_damaged_state_file_stops_the_backend_with_its_path()
    {
        File.WriteAllText(Options.StatePath!, "{\"Version\":1,\"NextDomId\":");

        Assert.That(
            () => new SimulatorBackend(Options, new ManualClock()),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains(Options.StatePath!));
    }
}
