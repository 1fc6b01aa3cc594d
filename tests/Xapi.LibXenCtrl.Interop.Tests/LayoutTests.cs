using System.Diagnostics;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>
/// The sizes, offsets and constants the managed code relies on, against what gcc computes from
/// libxen-dev's headers: layout-probe.c is compiled and run at test time.
/// </summary>
public class LayoutTests
{
    private static Dictionary<string, long>? s_probed;

    [Test]
    public void Every_number_the_bindings_rely_on_equals_what_the_C_headers_say()
    {
        var probed = Probe();
        var wrong = LibxlLayout.Facts
            .Where(f => !probed.TryGetValue(f.Key, out var value) || value != f.Value)
            .Select(f => $"{f.Key}: managed {f.Value}, C {(probed.TryGetValue(f.Key, out var v) ? v : "absent")}")
            .ToList();
        Assert.That(wrong, Is.Empty);
    }

    [Test]
    public void Every_number_the_C_probe_prints_has_its_managed_counterpart()
    {
        Assert.That(Probe().Keys.Except(LibxlLayout.Facts.Keys), Is.Empty);
    }

    [Test]
    public void The_probe_covers_the_domain_config_the_childproc_hooks_physinfo_and_dominfo()
    {
        Assert.That(Probe().Keys, Is.SupersetOf(new[]
        {
            "sizeof(libxl_domain_config)", "sizeof(libxl_childproc_hooks)", "offsetof(libxl_childproc_hooks.chldowner)",
            "offsetof(libxl_physinfo.total_pages)", "offsetof(libxl_dominfo.current_memkb)", "ERROR_DOMAIN_NOTFOUND",
        }));
    }

    private static Dictionary<string, long> Probe()
    {
        if (s_probed is not null)
        {
            return s_probed;
        }
        var source = Path.Combine(AppContext.BaseDirectory, "layout-probe.c");
        var dir = Directory.CreateTempSubdirectory("xen-layout-probe-");
        try
        {
            var binary = Path.Combine(dir.FullName, "layout-probe");
            var (compiled, _, compileErrors) = Run("gcc", "-std=gnu11", "-Wall", "-Werror", "-o", binary, source);
            Assert.That(compiled, Is.Zero, $"gcc could not compile the probe against libxen-dev's headers (install libxen-dev): {compileErrors}");
            var (ran, output, errors) = Run(binary);
            Assert.That(ran, Is.Zero, errors);
            var facts = new Dictionary<string, long>();
            foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var space = line.LastIndexOf(' ');
                facts.Add(line[..space], long.Parse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            }
            return s_probed = facts;
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static (int ExitCode, string Stdout, string Stderr) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }
}
