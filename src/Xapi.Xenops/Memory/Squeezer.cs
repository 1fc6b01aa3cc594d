namespace Xapi.Xenops.Memory;

/// <summary>
/// The ballooning policy of squeezed (squeeze.ml, restated) as pure decisions over a snapshot
/// of a host: which balloon targets to set so that a new domain fits, or the
/// needed/available pair to refuse with; and how to share a surplus again afterwards. All
/// amounts are KiB, as in squeezed.
/// </summary>
/// <remarks>
/// squeezed iterates (set targets, wait for the guests, look again) and treats a guest that stops
/// moving as inactive; this module decides one step under the assumption that every balloonable
/// guest reaches its target. The simulator applies the squeeze instantly, which is what the real
/// loop converges to with cooperative guests. Balloon driver inaccuracy (a few KiB) is not modelled.
/// </remarks>
public static class Squeezer
{
    /// <summary>
    /// The host memory squeezed always keeps free: the 64 MiB low-memory emergency pool plus
    /// 8 MiB of slack (squeeze_xen.ml). A new domain is granted memory only beyond it.
    /// </summary>
    public const long DefaultHostFreeReserveKib = (64 + 8) * 1024;

    /// <summary>
    /// The proportional policy: every domain's target is dynamic_min + γ·(dynamic_max − dynamic_min)
    /// with one γ in [0, 1] for all, γ = surplus / Σ ranges; so all balloonable domains sit at the
    /// same fraction of their range.
    /// </summary>
    public static IReadOnlyList<BalloonTarget> AllocateInProportion(long surplusKib, IEnumerable<BalloonDomain> domains)
    {
        var participants = domains.Where(d => d.CanBalloon).OrderBy(d => d.DomId).ToList();
        var gamma = Gamma(surplusKib, participants.Sum(d => d.RangeKib));
        return participants
            .Select(d => new BalloonTarget(d.DomId, d.DynamicMinKib + (long)(gamma * d.RangeKib)))
            .ToList();
    }

    /// <summary>
    /// Reserves memory for a new domain that needs between <paramref name="minKib"/> and
    /// <paramref name="maxKib"/> (xenopsd asks for dynamic_min + overhead … dynamic_max + overhead):
    /// the new domain's ideal share is what the proportional policy would give it as one more
    /// participant; the others are squeezed toward dynamic_min until that share plus the reserve
    /// is free. Throws <see cref="NotEnoughMemoryException"/> when even every balloonable domain at
    /// dynamic_min leaves less than the minimum, with the real server's parameters: the ideal
    /// share and the memory free after squeezing, both net of the reserve, in bytes.
    /// </summary>
    public static SqueezeResult FreeMemoryRange(long hostFreeKib, IReadOnlyList<BalloonDomain> domains, long minKib, long maxKib, long reserveKib = DefaultHostFreeReserveKib)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minKib);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKib, minKib);
        var participants = domains.Where(d => d.CanBalloon).OrderBy(d => d.DomId).ToList();

        // The most the host could have free if every balloonable domain went to dynamic_min.
        var maximumFreeKib = hostFreeKib + participants.Sum(d => d.MinFreeableKib);

        // The new domain as one more participant: it has nothing yet, so frees nothing.
        var newRangeKib = maxKib - minKib;
        var idealGamma = Gamma(Math.Max(0, maximumFreeKib - reserveKib), participants.Sum(d => d.RangeKib) + newRangeKib);
        var idealKib = minKib + (long)(idealGamma * newRangeKib);
        var requiredKib = idealKib + reserveKib;

        IReadOnlyList<BalloonTarget> targets;
        long freeAfterKib;
        if (hostFreeKib >= requiredKib)
        {
            // squeezed does not touch anyone when the memory is already free.
            targets = [];
            freeAfterKib = hostFreeKib;
        }
        else
        {
            targets = AllocateInProportion(Math.Max(0, maximumFreeKib - requiredKib), participants);
            var byDomain = participants.ToDictionary(d => d.DomId);
            freeAfterKib = hostFreeKib + targets.Sum(t => byDomain[t.DomId].ActualKib - t.TargetKib);
        }

        if (freeAfterKib < minKib + reserveKib)
        {
            // Both net of the reserve, as squeezed reports them; the free figure is not clamped at
            // zero (the real server can report a negative one when the host is below its reserve).
            throw new NotEnoughMemoryException(MemoryModel.BytesOfKib(idealKib), MemoryModel.BytesOfKib(freeAfterKib - reserveKib));
        }

        var grantedKib = Math.Max(minKib, Math.Min(freeAfterKib - reserveKib, maxKib));
        return new SqueezeResult(grantedKib, targets);
    }

    /// <summary>
    /// balance_memory: after memory was freed (a domain destroyed, a range widened), shares
    /// everything beyond the reserve among the balloonable domains again, so targets rise.
    /// </summary>
    public static IReadOnlyList<BalloonTarget> Balance(long hostFreeKib, IReadOnlyList<BalloonDomain> domains, long reserveKib = DefaultHostFreeReserveKib)
    {
        var participants = domains.Where(d => d.CanBalloon).ToList();
        var maximumFreeKib = hostFreeKib + participants.Sum(d => d.MinFreeableKib);
        return AllocateInProportion(Math.Max(0, maximumFreeKib - reserveKib), participants);
    }

    private static double Gamma(long surplusKib, long totalRangeKib)
    {
        // As OCaml's float division: x/0 is +∞ (clamped to 1) and 0/0 is NaN (taken as 0).
        if (totalRangeKib == 0)
        {
            return surplusKib > 0 ? 1.0 : 0.0;
        }

        return Math.Clamp((double)surplusKib / totalRangeKib, 0.0, 1.0);
    }
}

/// <summary>A domain as the squeezer sees it (KiB of guest memory).</summary>
/// <param name="CanBalloon">The guest advertised a balloon driver; others keep what they have.</param>
public readonly record struct BalloonDomain(int DomId, long DynamicMinKib, long DynamicMaxKib, long ActualKib, bool CanBalloon)
{
    public long RangeKib => Math.Max(0, DynamicMaxKib - DynamicMinKib);

    /// <summary>What setting the target to dynamic_min would free at least.</summary>
    public long MinFreeableKib => Math.Max(0, ActualKib - DynamicMinKib);
}

public readonly record struct BalloonTarget(int DomId, long TargetKib);

/// <summary>The outcome of a reservation: what the new domain gets, and the targets to set first.</summary>
public sealed record SqueezeResult(long GrantedKib, IReadOnlyList<BalloonTarget> Targets);
