using Xapi.Database;
using Xapi.LibXenCtrl.Interop;
using Xapi.Model;
using Xapi.Server.Hosting;

namespace Xapi.Server.Tests.Hosting;

/// <summary>
/// First boot on Xen (issue 12): dom0's /proc sees only dom0's share of the machine, so the host's
/// CPUs and memory come from libxl's physinfo and the control domain's from its dominfo. The real
/// values are checked in a real dom0 by tests/xen/scenario.sh; here the mapping.
/// </summary>
public class XenHostFactsTests
{
    // What dom0's /proc said in the QEMU harness: its 2 vCPUs and its 1 GiB.
    private static readonly HostFacts Dom0Proc = new("xen-dom0", "127.0.0.1", "lo", "00:00:00:00:00:00",
        2, "AuthenticAMD", "QEMU Virtual CPU version 2.5+", "15", "107", "1", "fpu de pse", 0, 1L << 30, 900L << 20);

    // physinfo of an 8-CPU host (2 sockets of 2 cores of 2 threads) with 16 GiB, 12 GiB of it free, at 2.4 GHz.
    private static readonly LibxlPhysInfo Physinfo = new(NrCpus: 8, TotalPages: 4L << 20, FreePages: 3L << 20, ThreadsPerCore: 2, CoresPerSocket: 2, CpuKhz: 2_400_000);

    private static readonly LibxlDomainInfo Dom0 = new(Guid.Empty, 0, Running: true, Blocked: false, Paused: false, Shutdown: false, Dying: false,
        ShutdownReason: 0, CurrentMemKib: 1L << 20, MaxMemKib: 1L << 20, CpuTimeNs: 1, VcpuMaxId: 3, VcpuOnline: 4, DomainType: 2);

    [Test]
    public void The_host_s_cpus_memory_and_speed_come_from_physinfo_and_the_cpu_identity_from_proc()
    {
        var facts = XenHostFacts.Of(Dom0Proc, Physinfo, Dom0);
        Assert.Multiple(() =>
        {
            Assert.That(facts.CpuCount, Is.EqualTo(8));
            Assert.That(facts.SocketCount, Is.EqualTo(2));
            Assert.That(facts.CpuSpeedMhz, Is.EqualTo(2400));
            Assert.That(facts.MemoryTotal, Is.EqualTo(16L << 30));
            Assert.That(facts.MemoryFree, Is.EqualTo(12L << 30));
            Assert.That(facts.CpuVendor, Is.EqualTo("AuthenticAMD"));
            Assert.That(facts.CpuFlags, Is.EqualTo("fpu de pse"));
            Assert.That(facts.ControlDomainMemory, Is.EqualTo(1L << 30));
            Assert.That(facts.ControlDomainVcpus, Is.EqualTo(4));
        });
    }

    [Test]
    public void Without_a_measured_speed_or_a_dom0_record_proc_s_values_stay()
    {
        var facts = XenHostFacts.Of(Dom0Proc with { CpuSpeedMhz = 1800 }, Physinfo with { CpuKhz = 0, ThreadsPerCore = 0, CoresPerSocket = 0 }, null);
        Assert.Multiple(() =>
        {
            Assert.That(facts.CpuSpeedMhz, Is.EqualTo(1800));
            Assert.That(facts.SocketCount, Is.EqualTo(8), "no topology: one socket per CPU rather than a division by zero");
            Assert.That(facts.ControlDomainMemory, Is.Null);
            Assert.That(facts.ControlDomainVcpus, Is.Null);
        });
    }

    [Test]
    public void First_boot_on_Xen_records_the_host_s_cpus_memory_and_the_real_control_domain()
    {
        var database = new XapiDatabase();
        var firstBoot = new FirstBoot(Guid.NewGuid().ToString("D"));
        firstBoot.Populate(database, XenHostFacts.Of(Dom0Proc, Physinfo, Dom0));

        var snapshot = database.Snapshot;
        var host = snapshot.All<HostRecord>().Single();
        var metrics = snapshot.Get(host.Metrics);
        var dom0 = snapshot.Get(host.ControlDomain);
        var dom0Metrics = snapshot.Get(dom0.Metrics);
        var cpus = snapshot.All<HostCpuRecord>().Where(c => c.Host == host.Ref).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(cpus.Select(c => c.Number).Order(), Is.EqualTo(new long[] { 0, 1, 2, 3, 4, 5, 6, 7 }));
            Assert.That(cpus.Select(c => c.Speed).Distinct(), Is.EqualTo(new long[] { 2400 }));
            Assert.That(host.CpuInfo["cpu_count"], Is.EqualTo("8"));
            Assert.That(host.CpuInfo["socket_count"], Is.EqualTo("2"));
            Assert.That(host.CpuInfo["speed"], Is.EqualTo("2400"));
            Assert.That(metrics.MemoryTotal, Is.EqualTo(16L << 30));
            Assert.That(metrics.MemoryFree, Is.EqualTo(12L << 30));
            Assert.That(dom0.IsControlDomain, Is.True);
            Assert.That(dom0.MemoryStaticMax, Is.EqualTo(1L << 30));
            Assert.That(dom0.VCPUsMax, Is.EqualTo(4));
            Assert.That(dom0Metrics.MemoryActual, Is.EqualTo(1L << 30));
            Assert.That(dom0Metrics.VCPUsNumber, Is.EqualTo(4));
        });
    }
}

/// <summary>Which backend the daemon drives: the simulator unless <c>--hypervisor xen</c> is asked for and Xen is there.</summary>
public class HypervisorChoiceTests
{
    [Test]
    public async Task The_simulator_is_the_default_backend()
    {
        await using var daemon = await TestDaemon.StartAsync();
        Assert.That(daemon.Service<Xapi.Xenops.IHypervisor>(), Is.InstanceOf<Xapi.Xenops.Simulator.SimulatorBackend>());
    }

    [Test]
    public void Asking_for_xen_where_there_is_none_refuses_with_the_probe_s_line_before_the_data_dir_is_made()
    {
        if (XenEnvironment.Probe() is not { } missing)
        {
            Assert.Ignore("this machine is a Xen dom0: the refusal cannot be seen here");
            return;
        }
        var dataDir = Path.Combine(Path.GetTempPath(), "xapi-xen-choice-" + Guid.NewGuid().ToString("N"));
        var options = new ServerOptions { Hypervisor = ServerOptions.XenHypervisor, DataDir = dataDir, HttpPort = 0, LogFile = "", NbdPort = -1 };
        var refused = Assert.Throws<StartupException>(() => XapiHost.Create(options));
        Assert.Multiple(() =>
        {
            Assert.That(refused!.Message, Is.EqualTo(missing));
            Assert.That(Directory.Exists(dataDir), Is.False);
        });
    }
}
