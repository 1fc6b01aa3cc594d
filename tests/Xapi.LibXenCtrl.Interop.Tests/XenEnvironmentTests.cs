using Xapi.LibXenCtrl.Interop;

namespace Xapi.LibXenCtrl.Interop.Tests;

public class XenEnvironmentTests
{
    private DirectoryInfo _root = null!;

    [SetUp]
    public void SetUp() => _root = Directory.CreateTempSubdirectory("xen-env-");

    [TearDown]
    public void TearDown() => _root.Delete(recursive: true);

    private XenEnvironment.Paths FakeHost => new(
        Path.Combine(_root.FullName, "proc-xen-capabilities"),
        Path.Combine(_root.FullName, "sys-hypervisor-type"),
        Path.Combine(_root.FullName, "dev-xen-privcmd"));

    private void Dom0()
    {
        File.WriteAllText(FakeHost.ProcXenCapabilities, "control_d\n");
        File.WriteAllText(FakeHost.SysHypervisorType, "xen\n");
        File.WriteAllText(FakeHost.Privcmd, "");
    }

    [Test]
    public void On_this_machine_without_Xen_the_probe_names_the_missing_hypervisor()
    {
        Assume.That(File.Exists("/proc/xen/capabilities"), Is.False, "this machine runs under Xen");
        Assert.That(XenEnvironment.Probe(),
            Is.EqualTo("--hypervisor xen: no Xen hypervisor: /proc/xen/capabilities is absent (not running in a Xen dom0)"));
    }

    [Test]
    public void A_missing_library_is_named_with_the_package_to_install_before_anything_else()
    {
        // No hypervisor either: the library comes first, since nothing works without it.
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: soname => soname != "libxenstore.so.4", openHypervisor: () => null),
            Is.EqualTo("--hypervisor xen: libxenstore.so.4 not found (install libxenstore4)"));
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => false, openHypervisor: () => null),
            Is.EqualTo("--hypervisor xen: libxenlight.so.4.17 not found (install libxenmisc4.17)"));
    }

    [Test]
    public void A_usable_dom0_probes_as_null()
    {
        Dom0();
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => true, openHypervisor: () => null), Is.Null);
    }

    [Test]
    public void A_Xen_guest_is_told_it_is_not_the_control_domain()
    {
        Dom0();
        File.WriteAllText(FakeHost.ProcXenCapabilities, "");
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => true, openHypervisor: () => null),
            Is.EqualTo($"--hypervisor xen: not the control domain: {FakeHost.ProcXenCapabilities} has no control_d (running in a Xen guest, not dom0)"));
    }

    [Test]
    public void Xen_without_xenfs_mounted_says_to_mount_it()
    {
        Dom0();
        File.Delete(FakeHost.ProcXenCapabilities);
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => true, openHypervisor: () => null),
            Is.EqualTo($"--hypervisor xen: {FakeHost.ProcXenCapabilities} is absent: xenfs is not mounted (mount -t xenfs xenfs /proc/xen)"));
    }

    [Test]
    public void A_dom0_without_privcmd_names_the_device()
    {
        Dom0();
        File.Delete(FakeHost.Privcmd);
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => true, openHypervisor: () => null),
            Is.EqualTo($"--hypervisor xen: {FakeHost.Privcmd} missing (load the xen-privcmd module)"));
    }

    [Test]
    public void A_hypervisor_interface_that_does_not_open_is_the_last_check()
    {
        Dom0();
        Assert.That(XenEnvironment.Probe(FakeHost, canLoad: _ => true, openHypervisor: () => "xc_interface_open failed (Permission denied)"),
            Is.EqualTo("--hypervisor xen: xc_interface_open failed (Permission denied)"));
    }

    [Test]
    public void Opening_the_hypervisor_interface_here_fails_with_a_reason()
    {
        Assume.That(File.Exists("/dev/xen/privcmd"), Is.False, "this machine has a Xen privcmd device");
        Assert.That(XenControl.TryOpen(), Does.StartWith("xc_interface_open failed ("));
    }
}
