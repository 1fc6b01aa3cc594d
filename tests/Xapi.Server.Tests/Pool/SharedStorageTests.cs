using Xapi.Model;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// A shared SR in a pool of hosts on one machine: an <c>ext</c> SR on one directory every host
/// reaches, with <c>shared=true</c> (the shared-directory stand-in for NFS here), plugged on
/// every host; a VM whose disk is on it runs on whichever member it is started on.
/// </summary>
public class SharedStorageTests
{
    private const long MiB = 1L << 20;

    private static HostRef HostOf(TestDaemon daemon) => new(daemon.Service<Xapi.Server.Hosting.FirstBoot>().HostRef);

    [Test]
    public async Task A_shared_SR_is_plugged_on_every_host_and_its_VM_runs_on_any_member()
    {
        await using var pool = await TestPool.StartAsync(3);
        for (var i = 1; i < 3; i++)
        {
            using var joining = await pool.Hosts[i].LoginAsync();
            await joining.InvokeAsync("pool.join", TestPool.AddressOf(0).ToString(), "root", TestDaemon.Password);
        }
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

        var vdi = (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = "shared disk", ["SR"] = sr, ["virtual_size"] = (8 * MiB).ToString(), ["type"] = "user",
            ["sharable"] = false, ["read_only"] = false, ["other_config"] = new Dictionary<string, object?>(),
        }))!;
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "on shared storage";
        record["memory_static_min"] = (128 * MiB).ToString();
        record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (256 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = vdi;
        vbd["userdevice"] = "0";
        vbd["mode"] = "RW";
        vbd["type"] = "Disk";
        vbd["bootable"] = true;
        await client.InvokeAsync("VBD.create", vbd);

        foreach (var member in new[] { pool.Hosts[2], pool.Hosts[1] })
        {
            await client.InvokeAsync("VM.start_on", vm, HostOf(member).Value, false, false);
            Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(HostOf(member).Value));
            await client.InvokeAsync("VM.hard_shutdown", vm);
        }
    }
}
