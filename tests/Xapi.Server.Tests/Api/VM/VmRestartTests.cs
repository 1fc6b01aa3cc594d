using Xapi.Xenops;
using Xapi.Xenops.Memory;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// A daemon restarted while guests run: the simulated hypervisor outlives it (as Xen outlives
/// xapi), and the new daemon reconciles the pool database with the domains it finds.
/// </summary>
public class VmRestartTests
{
    [Test]
    public async Task A_restarted_daemon_finds_running_domains_halts_VMs_whose_domain_vanished_and_reports_unknown_domains()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-vm-restart-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        var logFile = Path.Combine(dataDir, "restart.log");
        string kept, vanished, halted, vanishedUuid;
        long keptDomId;
        await using (var daemon = await TestDaemon.StartAsync(o => o.DataDir = dataDir))
        {
            using var client = await daemon.LoginAsync();
            kept = await client.CreateVmAsync("kept");
            vanished = await client.CreateVmAsync("vanished");
            halted = await client.CreateVmAsync("halted");
            await client.InvokeAsync("VM.start", kept, false, false);
            await client.InvokeAsync("VM.start", vanished, false, false);
            keptDomId = Convert.ToInt64(await client.InvokeAsync("VM.get_domid", kept));
            vanishedUuid = (string)(await client.InvokeAsync("VM.get_uuid", vanished))!;
        }

        // While no daemon runs, one domain dies and another appears behind the toolstack's back.
        var stranger = Guid.NewGuid();
        using (var hypervisor = new SimulatorBackend(new SimulatorOptions { StatePath = Path.Combine(dataDir, XapiHost.SimulatorStateFile) }, new ManualClock()))
        {
            Assert.That(await hypervisor.TryGetDomainAsync(Guid.Parse(vanishedUuid)), Is.Not.Null, "a stopped daemon leaves its domains running");
            await hypervisor.DestroyAsync(Guid.Parse(vanishedUuid));
            await hypervisor.CreateAsync(new DomainConfig { Uuid = stranger, Name = "stranger", Type = DomainType.Pv, Memory = MemoryRange.Fixed(128L << 20) });
        }

        await using var restarted = await TestDaemon.StartAsync(o =>
        {
            o.DataDir = dataDir;
            o.LogFile = logFile;
        });
        using var again = await restarted.LoginAsync();
        Assert.Multiple(async () =>
        {
            Assert.That(await again.InvokeAsync("VM.get_power_state", kept), Is.EqualTo("Running"));
            Assert.That(Convert.ToInt64(await again.InvokeAsync("VM.get_domid", kept)), Is.EqualTo(keptDomId));
            Assert.That(await again.InvokeAsync("VM.get_power_state", vanished), Is.EqualTo("Halted"));
            Assert.That(Convert.ToInt64(await again.InvokeAsync("VM.get_domid", vanished)), Is.EqualTo(-1));
            var vbd = (string)((IReadOnlyList<object?>)(await again.InvokeAsync("VM.get_VBDs", vanished))!)[0]!;
            Assert.That(await again.InvokeAsync("VBD.get_currently_attached", vbd), Is.False);
            Assert.That(await again.InvokeAsync("VM.get_power_state", halted), Is.EqualTo("Halted"));
        });

        // The new daemon controls the domain the old one started.
        await again.InvokeAsync("VM.hard_shutdown", kept);
        Assert.That(await again.InvokeAsync("VM.get_power_state", kept), Is.EqualTo("Halted"));
        await restarted.DisposeAsync();
        // Rolled daily: the file name carries the date.
        var log = string.Concat(Directory.GetFiles(dataDir, "restart*.log").Select(File.ReadAllText));
        Assert.That(log, Does.Contain(stranger.ToString("D")).And.Contain("does not know"), "the unknown domain is reported");
        Assert.That(log, Does.Contain(vanishedUuid).And.Contain("now Halted"));
    }
}
