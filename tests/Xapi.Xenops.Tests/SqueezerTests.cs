using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Tests;

public sealed class SqueezerTests
{
    private const long MiB = 1024; // in KiB, the squeezer's unit
    private const long GiB = 1024 * MiB;
    private const long Reserve = Squeezer.DefaultHostFreeReserveKib;

    [Test]
    public void A_domain_that_fits_in_free_memory_gets_its_maximum_and_nobody_is_squeezed()
    {
        var others = new[] { new BalloonDomain(1, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true) };
        var result = Squeezer.FreeMemoryRange(4 * GiB, others, 512 * MiB, GiB);
        Assert.Multiple(() =>
        {
            Assert.That(result.GrantedKib, Is.EqualTo(GiB));
            Assert.That(result.Targets, Is.Empty);
        });
    }

    [Test]
    public void Running_domains_are_squeezed_in_proportion_until_the_new_domain_and_the_reserve_fit()
    {
        var others = new[]
        {
            new BalloonDomain(1, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true),
            new BalloonDomain(2, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true),
        };

        var result = Squeezer.FreeMemoryRange(GiB, others, GiB, GiB);

        // Surplus over dynamic_min beyond the new GiB and the 72 MiB reserve: 3000 of 3072 MiB of range.
        Assert.Multiple(() =>
        {
            Assert.That(result.GrantedKib, Is.EqualTo(GiB));
            Assert.That(result.Targets, Is.EqualTo(new[] { new BalloonTarget(1, 2012 * MiB), new BalloonTarget(2, 2012 * MiB) }));
        });
    }

    [Test]
    public void Every_domain_ends_at_the_same_fraction_of_its_range()
    {
        var others = new[]
        {
            new BalloonDomain(1, 1 * GiB, 2 * GiB, 2 * GiB, CanBalloon: true),
            new BalloonDomain(2, 1 * GiB, 4 * GiB, 4 * GiB, CanBalloon: true),
        };

        var result = Squeezer.FreeMemoryRange(0, others, 2 * GiB, 2 * GiB, reserveKib: 0);

        // 4 GiB of range, 2 GiB needed: γ = 0.5 for both.
        Assert.That(result.Targets, Is.EqualTo(new[] { new BalloonTarget(1, 1536 * MiB), new BalloonTarget(2, 2560 * MiB) }));
    }

    [Test]
    public void A_domain_that_cannot_fit_even_with_everyone_at_dynamic_min_is_refused_with_needed_and_available_bytes()
    {
        var others = new[]
        {
            new BalloonDomain(1, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true),
            new BalloonDomain(2, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true),
        };

        var refusal = Assert.Throws<NotEnoughMemoryException>(() => Squeezer.FreeMemoryRange(0, others, 4 * GiB, 4 * GiB));

        Assert.Multiple(() =>
        {
            Assert.That(refusal!.NeededBytes, Is.EqualTo(4L * 1024 * 1024 * 1024));
            // Both domains at 512 MiB free 3 GiB; the reserve is not available to guests.
            Assert.That(refusal.AvailableBytes, Is.EqualTo((3 * GiB - Reserve) * 1024));
        });
    }

    [Test]
    public void A_domain_without_a_balloon_driver_is_never_squeezed()
    {
        var others = new[]
        {
            new BalloonDomain(1, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: false),
            new BalloonDomain(2, 512 * MiB, 2 * GiB, 2 * GiB, CanBalloon: true),
        };

        var result = Squeezer.FreeMemoryRange(GiB, others, 2 * GiB, 2 * GiB, reserveKib: 0);

        // Only domain 2's 1.5 GiB of range can give: a third of it stays above its minimum.
        Assert.Multiple(() =>
        {
            Assert.That(result.GrantedKib, Is.EqualTo(2 * GiB));
            Assert.That(result.Targets, Is.EqualTo(new[] { new BalloonTarget(2, GiB) }));
            Assert.That(
                () => Squeezer.FreeMemoryRange(GiB, others, 3 * GiB, 3 * GiB, reserveKib: 0),
                Throws.TypeOf<NotEnoughMemoryException>().With.Property(nameof(NotEnoughMemoryException.AvailableBytes)).EqualTo(2560L * 1024 * 1024));
        });
    }

    [Test]
    public void A_new_domain_with_a_range_is_granted_its_ideal_share_and_the_others_give_up_the_difference()
    {
        var others = new[] { new BalloonDomain(1, GiB, 3 * GiB, 3 * GiB, CanBalloon: true) };

        var result = Squeezer.FreeMemoryRange(2 * GiB, others, GiB, 3 * GiB, reserveKib: 0);

        // 2 GiB free + 2 GiB freeable over 4 GiB of range (the newcomer's included): its ideal is its
        // maximum, 3 GiB, so the incumbent goes down by the missing 1 GiB.
        Assert.Multiple(() =>
        {
            Assert.That(result.GrantedKib, Is.EqualTo(3 * GiB));
            Assert.That(result.Targets, Is.EqualTo(new[] { new BalloonTarget(1, 2 * GiB) }));
        });
    }

    [Test]
    public void Balancing_after_memory_came_free_raises_every_target_toward_dynamic_max()
    {
        var domains = new[]
        {
            new BalloonDomain(1, GiB, 2 * GiB, GiB, CanBalloon: true),
            new BalloonDomain(2, GiB, 3 * GiB, GiB, CanBalloon: true),
        };

        Assert.Multiple(() =>
        {
            Assert.That(Squeezer.Balance(10 * GiB, domains), Is.EqualTo(new[] { new BalloonTarget(1, 2 * GiB), new BalloonTarget(2, 3 * GiB) }));
            // 1.5 GiB beyond the reserve over 3 GiB of range: everyone at half.
            Assert.That(Squeezer.Balance(1536 * MiB + Reserve, domains), Is.EqualTo(new[] { new BalloonTarget(1, 1536 * MiB), new BalloonTarget(2, 2 * GiB) }));
        });
    }
}
