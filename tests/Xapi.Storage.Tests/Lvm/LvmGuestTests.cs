using System.Diagnostics;
using System.Text.RegularExpressions;
using Xapi.Tests;

namespace Xapi.Storage.Tests.Lvm;

/// <summary>
/// An lvm SR through the published daemon, against real LVM and device-mapper: this host's
/// kernel has no device-mapper, so scripts/guest/lvm/run-scenario.sh boots Debian's kernel under
/// QEMU (TCG) with the host's .NET runtime (with ASP.NET Core), the daemon as
/// <c>dotnet publish</c> makes it, and the scenario program (tests/Xapi.Storage.LvmScenario)
/// on a second virtio disk. In the guest the program starts the daemon (journal database in
/// /tmp, listening on 127.0.0.1), logs in as root and drives the SR over the XenAPI wire and the
/// HTTP data path (SR.probe/create/scan/destroy, PBD.plug/unplug, VDI.create/snapshot/clone/
/// resize/destroy, raw and VHD import/export checked by checksum); every SCENARIO line it
/// prints must say PASS. Budget: 4 minutes for the whole test (publish, guest build, boot,
/// daemon start, scenario); measured 2 min 45 s on a 2-core machine at load average 7 (daemon
/// start 26 s and first login 6 s of it: JIT under TCG; peak daemon memory 157 MB of the
/// guest's 1.5 GiB). The time of each step is in the test's output. Needs the Debian
/// packages qemu-system-x86, busybox-static, cpio, kmod, lvm2 and apt access for the kernel package.
/// </summary>
public partial class LvmGuestTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(4);

    [Test]
    [Category("Slow")]
    [Explicit("boots a QEMU guest for 2-3 minutes: run by scripts/test.sh, or with --filter TestCategory=Slow")]
    public async Task Every_lvm_driver_scenario_passes_in_a_guest_with_device_mapper()
    {
        // The scenario is built beside this project, in the same configuration (bin/<config>/net10.0).
        var output = AppContext.BaseDirectory.TrimEnd('/');
        var configuration = Path.GetFileName(Path.GetDirectoryName(output))!;
        var scenario = Path.Combine(RepositoryRoot.Path, "tests", "Xapi.Storage.LvmScenario", "bin", configuration, Path.GetFileName(output));
        Assert.That(File.Exists(Path.Combine(scenario, "Xapi.Storage.LvmScenario.dll")), Is.True, $"the scenario program is not built in {scenario}");

        var work = Directory.CreateTempSubdirectory("lvm-guest-");
        var clock = Stopwatch.StartNew();
        try
        {
            // The daemon as it ships: framework-dependent publish of the build this test runs with.
            var daemon = Path.Combine(work.FullName, "daemon");
            var publish = await RunAsync("dotnet", "publish", Path.Combine(RepositoryRoot.Path, "src", "Xapi.Server"), "-c", configuration, "--no-build", "-nologo", "-v", "quiet", "-o", daemon);
            Assert.That(publish.ExitCode, Is.Zero, $"dotnet publish failed:\n{publish.Output}");
            var published = clock.Elapsed;

            var start = new ProcessStartInfo("bash")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add(Path.Combine(RepositoryRoot.Path, "scripts", "guest", "lvm", "run-scenario.sh"));
            start.ArgumentList.Add(scenario);
            start.ArgumentList.Add(daemon);
            start.ArgumentList.Add(work.FullName);
            start.Environment["GUEST_TIMEOUT"] = ((int)(Budget.TotalSeconds - 30)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(Budget);
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
            }
            var serial = await stdout;
            var log = await stderr;
            TestContext.Out.WriteLine(log);
            TestContext.Out.WriteLine(serial);

            var results = ParseScenarioLines(serial);
            Assert.Multiple(() =>
            {
                Assert.That(serial, Does.Contain("SCENARIO-END"), "the guest did not finish the scenario");
                Assert.That(results.Where(r => !r.Pass).Select(r => $"{r.Name}: {r.Detail}"), Is.Empty, "failed checks");
                Assert.That(results.Select(r => r.Name), Is.SupersetOf(new[]
                {
                    "daemon-start", "login", "device-config-traversal", "probe-empty-device", "sr-create", "probe", "write-read", "write-after-snapshot", "export-vhd",
                    "clone-of-snapshot", "resize", "sr-full", "delete-frees-space", "sr-delete", "daemon-stop",
                }));
                Assert.That(process.ExitCode, Is.Zero, "run-scenario.sh failed");
                Assert.That(clock.Elapsed, Is.LessThan(Budget));
            });
            TestContext.Out.WriteLine($"{results.Count} checks passed in {clock.Elapsed.TotalSeconds:F0} s (publish {published.TotalSeconds:F0} s)");
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await output + await error);
    }

    [Test]
    public void Scenario_lines_are_parsed_with_their_verdict()
    {
        var results = ParseScenarioLines("noise\nSCENARIO sr-full PASS requested=4 available=0 t=1.0s\r\nSCENARIO probe FAIL <SRlist/> t=2s\nSCENARIO-END\n");
        Assert.That(results, Is.EqualTo(new[] { new ScenarioResult("sr-full", true, "requested=4 available=0 t=1.0s"), new ScenarioResult("probe", false, "<SRlist/> t=2s") }));
    }

    internal sealed record ScenarioResult(string Name, bool Pass, string Detail);

    internal static List<ScenarioResult> ParseScenarioLines(string serial) =>
        ScenarioLine().Matches(serial).Select(m => new ScenarioResult(m.Groups[1].Value, m.Groups[2].Value == "PASS", m.Groups[3].Value.TrimEnd())).ToList();

    [GeneratedRegex(@"^SCENARIO (\S+) (PASS|FAIL) ?([^\r\n]*)", RegexOptions.Multiline)]
    private static partial Regex ScenarioLine();
}
