using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Tests;

public sealed class MemoryModelTests
{
    private const long MiB = MemoryModel.BytesPerMib;
    private const long GiB = 1024 * MiB;

    [Test]
    public void An_hvm_vm_with_1_GiB_and_one_vcpu_has_12_MiB_of_overhead()
    {
        // vm-facts.md §4.1: shadow = ceil((256 + 1024 + 1024) / 256) = 9; 1 + 1 + 9 + 1 = 12 MiB.
        Assert.That(MemoryModel.OverheadBytes(DomainType.Hvm, GiB, 1, 1.0), Is.EqualTo(12 * MiB).And.EqualTo(12582912));
    }

    [Test]
    public void A_pv_vm_has_no_internal_extra_and_pvh_counts_as_hvm()
    {
        Assert.Multiple(() =>
        {
            Assert.That(MemoryModel.OverheadBytes(DomainType.Pv, GiB, 1, 1.0), Is.EqualTo(11 * MiB));
            Assert.That(MemoryModel.OverheadBytes(DomainType.Pvh, GiB, 1, 1.0), Is.EqualTo(12 * MiB));
        });
    }

    [Test]
    public void A_pv_in_pvh_vm_pays_for_its_shim()
    {
        // shim = 23 + 1024/90 = 34 MiB on top of the HVM figure.
        Assert.That(MemoryModel.OverheadBytes(DomainType.PvInPvh, GiB, 1, 1.0), Is.EqualTo((12 + 34) * MiB));
    }

    [Test]
    public void The_shadow_multiplier_scales_and_truncates_the_shadow_memory()
    {
        Assert.Multiple(() =>
        {
            // 9 MiB × 1.5 = 13.5 → 13; overhead 1 + 1 + 13 + 1.
            Assert.That(MemoryModel.OverheadBytes(DomainType.Hvm, GiB, 1, 1.5), Is.EqualTo(16 * MiB));
            // The VM's multiplier applies to PV overhead too (the real server's quirk).
            Assert.That(MemoryModel.OverheadBytes(DomainType.Pv, GiB, 1, 2.0), Is.EqualTo(20 * MiB));
        });
    }

    [Test]
    public void More_vcpus_cost_shadow_memory_and_per_vcpu_pages()
    {
        // 4 vCPUs: shadow ceil((1024 + 2048) / 256) = 12; vCPU pages ceil(152 / 256) = 1.
        Assert.That(MemoryModel.OverheadBytes(DomainType.Hvm, GiB, 4, 1.0), Is.EqualTo((1 + 1 + 12 + 1) * MiB));
    }

    [Test]
    public void Static_max_is_rounded_up_to_a_whole_MiB()
    {
        Assert.That(
            MemoryModel.OverheadBytes(DomainType.Hvm, GiB + 1, 1, 1.0),
            Is.EqualTo(MemoryModel.OverheadBytes(DomainType.Hvm, GiB + MiB, 1, 1.0)));
    }

    [Test]
    public void A_start_needs_dynamic_min_plus_overhead_by_default()
    {
        var memory = new MemoryRange(256 * MiB, 512 * MiB, GiB, GiB);
        Assert.Multiple(() =>
        {
            Assert.That(MemoryModel.StartRequirementBytes(DomainType.Hvm, memory, 1, 1.0), Is.EqualTo(512 * MiB + 12 * MiB));
            Assert.That(MemoryModel.StartRequirementBytes(DomainType.Hvm, memory, 1, 1.0, AccountingPolicy.StaticMax), Is.EqualTo(GiB + 12 * MiB));
            // A PV guest is charged with multiplier 1.0 at start whatever its VM says.
            Assert.That(MemoryModel.StartRequirementBytes(DomainType.Pv, memory, 1, 3.0), Is.EqualTo(512 * MiB + 11 * MiB));
            // PV-in-PVH cannot start ballooned down.
            Assert.That(MemoryModel.StartRequirementBytes(DomainType.PvInPvh, memory, 1, 1.0), Is.EqualTo(GiB + 46 * MiB));
        });
    }

    [Test]
    public void Host_free_memory_subtracts_dynamic_min_and_overhead_of_each_vm_and_never_goes_negative()
    {
        var claims = new[] { new VmMemoryClaim(512 * MiB, 12 * MiB), new VmMemoryClaim(GiB, 13 * MiB) };
        Assert.Multiple(() =>
        {
            Assert.That(
                MemoryModel.ComputeHostFreeMemory(8 * GiB, GiB, claims),
                Is.EqualTo(8 * GiB - GiB - 512 * MiB - 12 * MiB - GiB - 13 * MiB));
            Assert.That(MemoryModel.ComputeHostFreeMemory(2 * GiB, GiB, claims), Is.Zero);
        });
    }
}
