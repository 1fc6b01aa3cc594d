namespace Xapi.Xenops.Memory;

/// <summary>
/// The real server's memory arithmetic (xapi-idl memory.ml and xapi memory_check.ml, restated):
/// per-domain overhead, the footprint a start needs, and the database view of a host's free
/// memory. Pure: no I/O, no state; every backend and the daemon's checks share it so that the
/// numbers a client sees (VM.memory_overhead, host.compute_free_memory,
/// HOST_NOT_ENOUGH_FREE_MEMORY) are the real server's.
/// </summary>
public static class MemoryModel
{
    public const long BytesPerKib = 1024;
    public const long BytesPerMib = 1024 * 1024;
    public const long BytesPerPage = 4096;
    public const long KibPerMib = 1024;
    public const long PagesPerMib = BytesPerMib / BytesPerPage;

    /// <summary>The shadow multiplier a PV guest is charged with at start, whatever the VM says.</summary>
    public const double DefaultShadowMultiplier = 1.0;

    // "used" conversions round up (a partial unit is still consumed), "free" ones round down
    // (a partial unit cannot be handed out); the real server is careful about which is which.
    public static long MibOfBytesUsed(long bytes) => DivideRoundingUp(bytes, BytesPerMib);

    public static long MibOfBytesFree(long bytes) => bytes / BytesPerMib;

    public static long KibOfBytesUsed(long bytes) => DivideRoundingUp(bytes, BytesPerKib);

    public static long KibOfBytesFree(long bytes) => bytes / BytesPerKib;

    public static long MibOfKibUsed(long kib) => DivideRoundingUp(kib, KibPerMib);

    public static long MibOfPagesUsed(long pages) => DivideRoundingUp(pages, PagesPerMib);

    public static long BytesOfMib(long mib) => mib * BytesPerMib;

    public static long BytesOfKib(long kib) => kib * BytesPerKib;

    /// <summary>Memory Xen itself keeps for the domain inside its allocation.</summary>
    public static long ExtraInternalMib(DomainType type) => type == DomainType.Pv ? 0 : 1;

    /// <summary>Memory outside the domain's allocation (device model, xenstore, …).</summary>
    public static long ExtraExternalMib(DomainType type) => 1;

    /// <summary>The PV shim that a PV-in-PVH guest runs under, sized by its maximum.</summary>
    public static long ShimMib(DomainType type, long staticMaxMib) =>
        type == DomainType.PvInPvh ? 23 + staticMaxMib / 90 : 0;

    /// <summary>Shadow/HAP page tables: one MiB per 256 pages of (vCPUs·256 + 2·static_max_mib), times the multiplier, at least 1.</summary>
    public static long ShadowMib(long staticMaxMib, long vcpus, double multiplier)
    {
        var pages = 256L * vcpus + staticMaxMib + staticMaxMib;
        var totalMib = MibOfPagesUsed(pages);
        // OCaml's Int64.of_float truncates toward zero.
        var multiplied = (long)Math.Truncate(totalMib * multiplier);
        return Math.Max(1, multiplied);
    }

    public static long OverheadMib(DomainType type, long staticMaxMib, long vcpus, double multiplier) =>
        ExtraInternalMib(type)
        + ExtraExternalMib(type)
        + ShadowMib(staticMaxMib, vcpus, multiplier)
        // Xen's per-vCPU structures: 38 pages each (CA-423172).
        + MibOfPagesUsed(38L * vcpus)
        + ShimMib(type, staticMaxMib);

    /// <summary>
    /// VM.compute_memory_overhead / VM.memory_overhead in bytes: static_max rounded up to a MiB,
    /// VCPUs_max and the VM's HVM_shadow_multiplier — the multiplier applies even to PV guests
    /// here (the real server's quirk; only the start requirement uses 1.0 for PV).
    /// </summary>
    public static long OverheadBytes(DomainType type, long staticMaxBytes, long vcpusMax, double shadowMultiplier) =>
        BytesOfMib(OverheadMib(type, MibOfBytesUsed(staticMaxBytes), vcpusMax, shadowMultiplier));

    public static long FootprintMib(DomainType type, long targetMib, long staticMaxMib, long vcpus, double multiplier) =>
        targetMib + OverheadMib(type, staticMaxMib, vcpus, multiplier);

    /// <summary>The guest memory a start reserves by the accounting policy (memory_check.ml, xapi_vm_helpers.ml).</summary>
    public static long StartTargetBytes(DomainType type, MemoryRange memory, AccountingPolicy policy = AccountingPolicy.DynamicMin) =>
        // A PV-in-PVH guest cannot start ballooned down: the shim needs its full size.
        type == DomainType.PvInPvh
            ? memory.StaticMax
            : policy switch
            {
                AccountingPolicy.DynamicMin => memory.DynamicMin,
                AccountingPolicy.DynamicMax => memory.DynamicMax,
                _ => memory.StaticMax,
            };

    /// <summary>
    /// What a start needs free on the host, in bytes: footprint_mib(target) with the target in
    /// whole MiB rounded up (the "needed" of HOST_NOT_ENOUGH_FREE_MEMORY on the start path).
    /// </summary>
    public static long StartRequirementBytes(DomainType type, MemoryRange memory, long vcpusMax, double shadowMultiplier, AccountingPolicy policy = AccountingPolicy.DynamicMin)
    {
        var target = StartTargetBytes(type, memory, policy);
        // The real server goes bytes → KiB (up) → MiB (up); the same as bytes → MiB (up).
        var targetMib = MibOfKibUsed(KibOfBytesUsed(target));
        var multiplier = type == DomainType.Pv ? DefaultShadowMultiplier : shadowMultiplier;
        return BytesOfMib(FootprintMib(type, targetMib, MibOfBytesUsed(memory.StaticMax), vcpusMax, multiplier));
    }

    /// <summary>
    /// host.compute_free_memory: memory_total − host.memory_overhead − Σ(dynamic_min + VM.memory_overhead)
    /// over the VMs resident on or scheduled to the host, clamped at 0. A database computation:
    /// ballooning state does not enter it.
    /// </summary>
    public static long ComputeHostFreeMemory(long hostMemoryTotal, long hostMemoryOverhead, IEnumerable<VmMemoryClaim> claims)
    {
        var available = hostMemoryTotal - hostMemoryOverhead;
        foreach (var claim in claims)
        {
            available -= claim.DynamicMin + claim.Overhead;
        }

        return Math.Max(0, available);
    }

    private static long DivideRoundingUp(long numerator, long denominator) => (numerator + denominator - 1) / denominator;
}

/// <summary>Which bound of a VM's range memory checks charge it with.</summary>
public enum AccountingPolicy
{
    /// <summary>Liberal: assumes the guests cooperate with ballooning (the default for starts).</summary>
    DynamicMin,

    DynamicMax,

    /// <summary>Conservative (HA).</summary>
    StaticMax,
}

/// <summary>A VM's four memory bounds, bytes; valid when static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max.</summary>
public readonly record struct MemoryRange(long StaticMin, long DynamicMin, long DynamicMax, long StaticMax)
{
    /// <summary>All four bounds the same: the VM does not balloon.</summary>
    public static MemoryRange Fixed(long bytes) => new(bytes, bytes, bytes, bytes);

    public bool IsOrdered => StaticMin <= DynamicMin && DynamicMin <= DynamicMax && DynamicMax <= StaticMax;
}

/// <summary>One VM's charge against a host in host.compute_free_memory, bytes.</summary>
public readonly record struct VmMemoryClaim(long DynamicMin, long Overhead);
