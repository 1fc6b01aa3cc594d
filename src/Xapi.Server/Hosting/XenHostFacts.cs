using Xapi.LibXenCtrl.Interop;
using Xapi.Xenops.Memory;

namespace Xapi.Server.Hosting;

/// <summary>
/// What a Xen dom0 knows of its host beyond /proc: dom0's /proc sees its own share of the machine
/// (its vCPUs, its memory), while the hypervisor's physinfo counts the host's CPUs and pages, and
/// libxl's dominfo of domain 0 gives the control domain's real memory and vCPUs.
/// </summary>
public static class XenHostFacts
{
    /// <summary>
    /// <paramref name="dom0Facts"/> (names, addresses and CPU identity from dom0's /proc) with the
    /// host's CPU count, sockets, speed and memory from <paramref name="physinfo"/>, and the control
    /// domain's memory and vCPUs from <paramref name="controlDomain"/> when it was found.
    /// </summary>
    public static HostFacts Of(HostFacts dom0Facts, LibxlPhysInfo physinfo, LibxlDomainInfo? controlDomain) => dom0Facts with
    {
        CpuCount = (int)Math.Max(1, physinfo.NrCpus),
        SocketCount = (int)physinfo.Sockets,
        // Xen measures the TSC; dom0's /proc/cpuinfo under PV may report nothing useful.
        CpuSpeedMhz = physinfo.CpuKhz > 0 ? physinfo.CpuKhz / 1000 : dom0Facts.CpuSpeedMhz,
        MemoryTotal = checked((long)physinfo.TotalPages * MemoryModel.BytesPerPage),
        MemoryFree = checked((long)physinfo.FreePages * MemoryModel.BytesPerPage),
        ControlDomainMemory = controlDomain is null ? null : checked((long)controlDomain.CurrentMemKib * MemoryModel.BytesPerKib),
        ControlDomainVcpus = controlDomain is null ? null : (int)Math.Max(1, controlDomain.VcpuOnline),
    };
}
