using System.Globalization;
using Xapi.LibXenCtrl.Interop;

// The project's Xen bindings against a real hypervisor, run in dom0 by tests/xen/scenario.sh:
// the environment probe the daemon runs for --hypervisor xen, then a libxl context (with
// SIGCHLD negotiated) reading the host and the domain list. One line per check:
//   XAPI-STEP <name> OK|FAIL <detail>
// The exit status is the number of failed checks.

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

var failures = 0;
void Step(string name, bool ok, string detail)
{
    failures += ok ? 0 : 1;
    Console.WriteLine($"XAPI-STEP {name} {(ok ? "OK" : "FAIL")} {detail.ReplaceLineEndings(" ")}");
}

var probe = XenEnvironment.Probe();
Step("interop-environment", probe is null, probe ?? "Xen usable: libraries load, control domain, privcmd opens");
try
{
    using var libxl = LibxlContext.Open(logLevel: 7); // XTL_WARN and up: the checks' lines stay readable
    var physinfo = libxl.GetPhysInfo();
    const ulong PageKib = 4;
    Step("libxl-physinfo", physinfo.NrCpus > 0 && physinfo.TotalPages > 0, string.Create(CultureInfo.InvariantCulture,
        $"nr_cpus={physinfo.NrCpus} total_memory={physinfo.TotalPages * PageKib / 1024}MiB free_memory={physinfo.FreePages * PageKib / 1024}MiB"));
    var domains = libxl.ListDomains();
    var dom0 = domains.FirstOrDefault(d => d.DomId == 0);
    Step("libxl-domains", dom0 is not null && libxl.DomainName(0) == "Domain-0", string.Create(CultureInfo.InvariantCulture,
        $"{domains.Count} domain(s); domid 0 is {libxl.DomainName(0) ?? "unnamed"} with {(dom0?.CurrentMemKib ?? 0) / 1024}MiB and {(dom0?.VcpuOnline ?? 0)} vCPU(s) online"));
}
catch (Exception e)
{
    Step("libxl-context", false, $"{e.GetType().Name}: {e.Message}");
}
return failures;
