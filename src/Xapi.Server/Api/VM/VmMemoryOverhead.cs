using Xapi.Model;
using Xapi.Xenops.Memory;

namespace Xapi.Server.Api;

/// <summary>
/// <c>VM.memory_overhead</c>: what a domain needs beyond its guest memory, from a VM's fields by the
/// real server's memory model (<see cref="MemoryModel.OverheadBytes"/>, the one the backends use).
/// </summary>
internal static class VmMemoryOverhead
{
    public static long Bytes(long staticMax, long vcpusMax, double shadowMultiplier, DomainType domainType) =>
        MemoryModel.OverheadBytes(DomainConfigs.Seam(domainType), staticMax, vcpusMax, shadowMultiplier);
}
