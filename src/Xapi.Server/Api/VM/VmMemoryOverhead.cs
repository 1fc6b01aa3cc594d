using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>
/// <c>VM.memory_overhead</c>: what a domain needs beyond its guest memory (shadow page tables,
/// per-vCPU state, device-model pages), from static_max, VCPUs_max and the shadow multiplier,
/// by the real server's memory model (xapi-idl memory.ml, memory_check.ml).
/// </summary>
internal static class VmMemoryOverhead
{
    private const long BytesPerMiB = 1 << 20;
    private const long PagesPerMiB = 256;

    public static long Bytes(long staticMax, long vcpusMax, double shadowMultiplier, DomainType domainType)
    {
        unchecked
        {
            var staticMaxMiB = DivideRoundingUp(staticMax, BytesPerMiB);
            // The real server converts VCPUs_max to a native int; the multiplier applies to PV too.
            var vcpus = vcpusMax;
            var (internalMiB, externalMiB, shimMiB) = domainType switch
            {
                DomainType.Pv => (0L, 1L, 0L),
                DomainType.PvInPvh => (1L, 1L, 23 + (staticMaxMiB / 90)),
                _ => (1L, 1L, 0L),
            };
            var shadowTotal = DivideRoundingUp((256 * vcpus) + staticMaxMiB + staticMaxMiB, PagesPerMiB);
            var shadow = Math.Max(1L, (long)(shadowTotal * shadowMultiplier));
            var overheadMiB = internalMiB + externalMiB + shadow + DivideRoundingUp(38 * vcpus, PagesPerMiB) + shimMiB;
            return overheadMiB * BytesPerMiB;
        }
    }

    private static long DivideRoundingUp(long numerator, long denominator) => unchecked((numerator + denominator - 1) / denominator);
}
