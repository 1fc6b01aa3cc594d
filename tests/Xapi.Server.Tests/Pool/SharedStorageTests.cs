using Xapi.Model;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// A shared SR in a pool of hosts on one machine: an <c>ext</c> SR on one directory every host
/// reaches, with <c>shared=true</c> (the shared-directory stand-in for NFS here), plugged on
/// every host; a VM whose disk is on it runs on whichever member it is started on.
/// </summary>
public class SharedStorageTests
{
    private static HostRef HostOf(TestDaemon daemon) => PoolKit.HostOf(daemon);

    [Test]
    public async Task A_shared_SR_is_plugged_on_every_host_and_its_VM_runs_on_any_member()
    {
        await using var pool = await PoolKit.JoinedAsync(3);
        var shared = Directory.CreateTempSubdirectory("xapi-shared-sr-");
        using var cleanup = new DirectoryCleanup(shared.FullName);
        using var client = await pool.Hosts[0].LoginAsync();

        var sr = (string)(await client.InvokeAsync("SR.create", HostOf(pool.Hosts[0]).Value,
            new Dictionary<string, object?> { ["location"] = shared.FullName }, "0", "pool storage", "", "ext", "user", true, new Dictionary<string, object?>()))!;

        var pbds = pool.Hosts[0].Database.Snapshot.All<PBDRecord>().Where(p => p.SR.Value == sr).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(pbds.Select(p => p.Host), Is.EquivalentTo(pool.Hosts.Select(HostOf)), "a PBD for every host");
            Assert.That(pbds.All(p => p.CurrentlyAttached), Is.True, "each plugged on its host");
        });

        var vm = await client.CreateVmAsync("on shared storage", sr: sr);

        foreach (var member in new[] { pool.Hosts[2], pool.Hosts[1] })
        {
            await client.InvokeAsync("VM.start_on", vm, HostOf(member).Value, false, false);
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(member).Value));
            await client.InvokeAsync("VM.hard_shutdown", vm);
        }
    }
}
