using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// SR and VDI operations called at the master on a member's local SR run on the member, where the
/// SR is plugged (as real masters forward them): the disk is made, snapshotted, scanned and
/// destroyed in the member's storage.
/// </summary>
public class StorageForwardingTests
{
    [Test]
    public async Task Disks_on_a_member_s_local_SR_are_made_and_destroyed_there_through_the_master()
    {
        await using var pool = await PoolKit.JoinedAsync(2);
        var member = PoolKit.HostOf(pool.Hosts[1]);
        var snapshot = pool.Hosts[0].Database.Snapshot;
        var memberSr = snapshot.All<PBDRecord>().Where(p => p.Host == member).Select(p => snapshot.Get(p.SR))
            .Single(sr => sr.Type == "ext").Ref.Value;
        using var client = await pool.Hosts[0].LoginAsync();
        var record = ApiSchema.Class("VDI").MinimalRecord();
        record["name_label"] = "on the member";
        record["SR"] = memberSr;
        record["virtual_size"] = (4L << 20).ToString();

        var vdi = (string)(await client.InvokeAsync("VDI.create", record))!;
        var copy = (string)(await client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        // A scan on the member keeps only disks whose files it finds in its own storage.
        await client.InvokeAsync("SR.scan", memberSr);

        Assert.That((IReadOnlyList<object?>)(await client.InvokeAsync("SR.get_VDIs", memberSr))!, Does.Contain(vdi).And.Contain(copy));
        await client.InvokeAsync("VDI.destroy", copy);
        await client.InvokeAsync("VDI.destroy", vdi);
        await client.InvokeAsync("SR.scan", memberSr);
        Assert.That((IReadOnlyList<object?>)(await client.InvokeAsync("SR.get_VDIs", memberSr))!, Does.Not.Contain(vdi).And.Not.Contain(copy));
    }
}
