using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Xapi.Tests;

namespace Xapi.Xen.Tests;

/// <summary>
/// Real Xen in the test suite (issue 12, stages 1 and 2): tests/xen/run.sh extracts Debian's Xen
/// 4.17, kernel and toolstack packages (apt-get download into ~/.cache/xapi-xen, never installed),
/// builds a busybox dom0 initramfs with a PV guest (the same kernel, a busybox initramfs),
/// publishes the daemon, xe and the Dom0Check program self-contained for linux-x64, boots Xen
/// under QEMU (TCG) and runs tests/xen/scenario.sh in dom0: the libxl bindings meet the real
/// hypervisor, and the daemon with --hypervisor xen reads the real host and drives the guest
/// (start, pause/unpause, metrics, hard and clean shutdown, hard reboot, a restart of the daemon
/// finding it again, a guest powering itself off), then a PVH guest that ignores VM.clean_shutdown
/// (VM_SHUTDOWN_TIMEOUT, then hard_shutdown), each state checked against xl list. The XenAPI part
/// of the same steps runs on the simulator in RealXenScenarioOnSimulatorTests. Each step
/// prints an XAPI-STEP line on the serial console; dom0 ends QEMU through isa-debug-exit with the
/// number of failed steps. Budget 10 minutes, the issue's limit, and QEMU's own 510 s: on this
/// 2-core machine QEMU ran 395 s for 57 steps (the HVM guest boots while the PVH and disk steps
/// run), the dom0 build 13 s and the publish 12 s incremental, about a minute from scratch.
/// </summary>
public partial class RealXenTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(10);

    [Test]
    [Category("Slow")]
    [Category("Xen")]
    [Explicit("boots Xen under QEMU for about 7 minutes: run by scripts/test.sh, or with --filter TestCategory=Xen")]
    public async Task The_daemon_runs_in_a_real_Xen_dom0_booted_under_QEMU()
    {
        if (QemuCannotRun() is { } why)
        {
            Assert.Ignore($"real Xen under QEMU skipped: {why}");
        }

        var start = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(RepositoryRoot.Path, "tests", "xen", "run.sh"));
        // QEMU's own limit, under the test's budget, so that the script reports a timeout itself.
        start.Environment["XEN_TIMEOUT"] = "510";
        // The test owns the work folder (payload, boot files, serial log): removed even when the
        // script is killed at the budget.
        var work = Directory.CreateTempSubdirectory("xapi-xen-");
        start.Environment["XEN_WORK"] = work.FullName;
        try
        {
            await RunAsync(start);
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static async Task RunAsync(ProcessStartInfo start)
    {
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        var stdout = PumpAsync(process.StandardOutput, output);
        var stderr = PumpAsync(process.StandardError, output);
        using var timeout = new CancellationTokenSource(Budget);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
        await Task.WhenAll(stdout, stderr);
        var text = output.ToString();
        TestContext.Out.WriteLine(text);

        var steps = ParseSteps(text);
        Assert.Multiple(() =>
        {
            Assert.That(process.ExitCode, Is.Zero, "tests/xen/run.sh failed (its output, with the serial log's tail, is above)");
            Assert.That(steps.Where(s => !s.Ok).Select(s => $"{s.Name}: {s.Detail}"), Is.Empty, "failed steps");
            Assert.That(steps.Select(s => s.Name), Is.SupersetOf(new[]
            {
                "dom0-boot", "xenstored", "xl-list", "xl-info", "payload", "interop-environment",
                "libxl-physinfo", "libxl-domains", "daemon-start", "xenapi-login", "xenapi-host-records", "xe-host-list", "xen-host-facts",
                "vm-create", "vm-start", "guest-console", "vm-pause", "vm-unpause", "vm-metrics", "vm-memory-dynamic-range", "vm-hard-shutdown",
                "vm-start-again", "guest-console-again", "vm-suspend", "vm-resume", "vm-clean-shutdown", "vm-start-third", "vm-hard-reboot", "daemon-stop",
                "daemon-restart-finds-guest", "vm-dynamic-range-after-restart", "guest-self-poweroff",
                "vm-create-pvh", "vm-start-pvh", "guest-console-pvh", "xl-type-pvh", "vm-clean-shutdown-ignored", "vm-hard-shutdown-pvh",
                "sr-create-ext", "vdi-import", "vbd-vif-create", "vm-start-disknet", "guest-disk-read", "guest-net", "guest-agent", "vbd-hotplug", "vif-hotplug", "vm-clean-shutdown-disknet", "vdi-export",
                "vm-create-hvm", "vm-start-hvm", "guest-console-hvm", "vbd-insert-hvm", "vbd-eject-hvm", "vm-hard-shutdown-hvm",
                "xl-create", "daemon-stop-final",
            }));
            Assert.That(text, Does.Contain("xen: PASSED"));
            Assert.That(clock.Elapsed, Is.LessThan(Budget));
        });
        TestContext.Out.WriteLine($"{steps.Count} steps passed in {clock.Elapsed.TotalSeconds:F0} s");
    }

    /// <summary>Null when QEMU can boot a machine here; otherwise why not.</summary>
    private static string? QemuCannotRun()
    {
        try
        {
            using var qemu = Process.Start(new ProcessStartInfo("qemu-system-x86_64", "--version") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
            qemu.WaitForExit(30_000);
            return qemu.ExitCode == 0 ? null : $"qemu-system-x86_64 --version exited with {qemu.ExitCode}";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"qemu-system-x86_64 cannot be started ({e.Message}); install qemu-system-x86, as scripts/test.sh does";
        }
    }

    private static async Task PumpAsync(StreamReader reader, StringBuilder into)
    {
        while (await reader.ReadLineAsync() is { } line)
        {
            lock (into)
            {
                into.AppendLine(line);
            }
        }
    }

    [Test]
    public void Step_lines_are_parsed_with_their_verdict()
    {
        var steps = ParseSteps("(XEN) noise\nXAPI-STEP xl-list OK Domain-0 0 1024 2 r----- 3.1 t=9.2s\r\nXAPI-STEP daemon-start FAIL no listener t=70s\nXAPI-STEPS not a step\n");
        Assert.That(steps, Is.EqualTo(new[] { new Step("xl-list", true, "Domain-0 0 1024 2 r----- 3.1 t=9.2s"), new Step("daemon-start", false, "no listener t=70s") }));
    }

    internal sealed record Step(string Name, bool Ok, string Detail);

    internal static List<Step> ParseSteps(string log) =>
        StepLine().Matches(log).Select(m => new Step(m.Groups[1].Value, m.Groups[2].Value == "OK", m.Groups[3].Value.TrimEnd())).ToList();

    [GeneratedRegex(@"^XAPI-STEP (\S+) (OK|FAIL) ?([^\r\n]*)", RegexOptions.Multiline)]
    private static partial Regex StepLine();
}
