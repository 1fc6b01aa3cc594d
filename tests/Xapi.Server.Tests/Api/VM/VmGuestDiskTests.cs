using Xapi.Protocol;
using Xapi.Xenops;
using Xapi.Xenops.Simulator;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// Simulated guests write a verifiable pattern to their VDIs through the storage data path: what a
/// snapshot, a suspend and a resume keep is checked on the bytes a client exports.
/// </summary>
public class VmGuestDiskTests
{
    [Test]
    public async Task A_guest_writes_land_in_its_VDI_a_snapshot_keeps_the_earlier_ones_and_suspend_and_resume_lose_none()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(50));
        using var client = await daemon.LoginAsync();
        var simulator = (SimulatorBackend)daemon.Service<IHypervisor>();
        var vm = await client.CreateVmAsync("writer");
        var uuid = Guid.Parse((string)(await client.InvokeAsync("VM.get_uuid", vm))!);
        var vbd = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("VM.get_VBDs", vm))!)[0]!;
        var vdi = (string)(await client.InvokeAsync("VBD.get_VDI", vbd))!;
        await client.InvokeAsync("VM.start", vm, false, false);

        for (var i = 0; i < 3; i++)
        {
            Assert.That(await simulator.RunWorkloadStepAsync(uuid), Is.True);
        }
        var snapshot = (string)(await client.InvokeAsync("VM.snapshot", vm, "after three writes"))!;
        var snapshotVbd = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("VM.get_VBDs", snapshot))!)[0]!;
        var snapshotVdi = (string)(await client.InvokeAsync("VBD.get_VDI", snapshotVbd))!;
        for (var i = 0; i < 2; i++)
        {
            await simulator.RunWorkloadStepAsync(uuid);
        }
        await client.UntilVmAsync(vm, r => (string)r["guest_metrics"]! != Xapi.Model.XType.NullRef);
        await client.InvokeAsync("VM.suspend", vm);
        await client.InvokeAsync("VM.resume", vm, false, false);
        await client.InvokeAsync("VM.hard_shutdown", vm);

        var live = await PatternAsync(daemon, client, vdi, 6);
        var kept = await PatternAsync(daemon, client, snapshotVdi, 6);
        Assert.Multiple(() =>
        {
            Assert.That(live, Is.EqualTo(new long?[] { 1, 2, 3, 4, 5, null }), "every write, in the block it went to");
            Assert.That(kept, Is.EqualTo(new long?[] { 1, 2, 3, null, null, null }), "the snapshot has the writes made before it");
        });
        Assert.That(await ReadBlockOwnersAsync(daemon, client, vdi, 5), Is.All.EqualTo(uuid), "the blocks carry the writing guest's identity");
    }

    /// <summary>The step that wrote each of the first <paramref name="blocks"/> blocks, or null where no intact pattern block is.</summary>
    private static async Task<long?[]> PatternAsync(TestDaemon daemon, XenApiClient client, string vdi, int blocks)
    {
        var bytes = await ExportAsync(daemon, client, vdi, blocks);
        return Enumerable.Range(0, blocks).Select(b =>
            DiskPattern.TryReadBlock(bytes.AsSpan(b * DiskPattern.BlockSize, DiskPattern.BlockSize), out _, out var step, out var block) && block == b
                ? step : (long?)null).ToArray();
    }

    private static async Task<Guid[]> ReadBlockOwnersAsync(TestDaemon daemon, XenApiClient client, string vdi, int blocks)
    {
        var bytes = await ExportAsync(daemon, client, vdi, blocks);
        return Enumerable.Range(0, blocks).Select(b =>
            DiskPattern.TryReadBlock(bytes.AsSpan(b * DiskPattern.BlockSize, DiskPattern.BlockSize), out var owner, out _, out _) ? owner : Guid.Empty).ToArray();
    }

    private static async Task<byte[]> ExportAsync(TestDaemon daemon, XenApiClient client, string vdi, int blocks)
    {
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var bytes = await http.GetByteArrayAsync($"/export_raw_vdi?vdi={vdi}&session_id={client.Session}");
        Assert.That(bytes.Length, Is.GreaterThanOrEqualTo(blocks * DiskPattern.BlockSize));
        return bytes;
    }
}
