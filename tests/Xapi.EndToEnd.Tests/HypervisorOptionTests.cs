namespace Xapi.EndToEnd.Tests;

/// <summary>
/// <c>--hypervisor</c> on the real daemon: on a machine that cannot run Xen, <c>xen</c> is refused
/// before anything is written or listened on, in one line naming what is missing.
/// </summary>
public class HypervisorOptionTests
{
    private const string Password = "hypervisor-password";

    private string _dataDir = null!;

    [SetUp]
    public void CreateDataDir() => _dataDir = Directory.CreateTempSubdirectory("xapi-hypervisor-").FullName;

    [TearDown]
    public void DeleteDataDir() => Directory.Delete(_dataDir, recursive: true);

    [Test]
    public async Task Xen_on_a_machine_without_a_hypervisor_exits_non_zero_with_one_line_naming_what_is_missing()
    {
        Assume.That(File.Exists("/proc/xen/capabilities"), Is.False, "this machine runs under Xen");

        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password, "--hypervisor", "xen");

        TestContext.Out.WriteLine($"exit {exit.Code} after {exit.Elapsed.TotalSeconds:0.0} s; stderr: {exit.Error}");
        Assert.Multiple(() =>
        {
            Assert.That(exit.Code, Is.GreaterThan(0), "the daemon exits non-zero instead of serving");
            Assert.That(exit.Error.TrimEnd('\n'),
                Is.EqualTo("xapi-dotnet: --hypervisor xen: no Xen hypervisor: /proc/xen/capabilities is absent (not running in a Xen dom0)"));
            Assert.That(exit.Output, Does.Not.Contain("listening"), "the daemon never listened");
            Assert.That(Directory.EnumerateFileSystemEntries(_dataDir), Is.Empty, "nothing was written to the data dir");
        });
    }

    [Test]
    public async Task An_unknown_hypervisor_is_refused_naming_the_choices()
    {
        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password, "--hypervisor", "foo");

        Assert.Multiple(() =>
        {
            Assert.That(exit.Code, Is.GreaterThan(0));
            Assert.That(exit.Error.TrimEnd('\n'), Is.EqualTo("xapi-dotnet: unknown Hypervisor 'foo': use simulator or xen"));
            Assert.That(exit.Output, Does.Not.Contain("listening"));
        });
    }
}
