namespace Xapi.Server.Tests.Api.Storage;

/// <summary>
/// An <c>nfs</c> SR driven over the wire against the real nfs-ganesha the test command starts
/// (<c>scripts/nfs-sandbox.sh</c>, category Nfs): create, import, snapshot, clone, export, destroy.
/// </summary>
[Explicit("needs the NFS sandbox")]
[Category("Nfs")]
public class NfsSrTests
{
    private const string Server = "127.0.0.1";
    private const string ServerPath = "/export";

    [Test]
    public async Task A_vdi_on_an_nfs_sr_keeps_its_data_through_snapshot_clone_and_export()
    {
        if (Environment.GetEnvironmentVariable("NFS_SANDBOX_URL") != $"nfs://{Server}{ServerPath}")
        {
            const string how = "run inside scripts/nfs-sandbox.sh";
            if (Environment.GetEnvironmentVariable("XAPI_NFS_TESTS") == "required")
            {
                Assert.Fail(how);
            }
            Assert.Ignore(how);
        }
        await using var kit = await StorageKit.StartAsync();
        var sr = await kit.CreateSrAsync("nfs", new Dictionary<string, object?> { ["server"] = Server, ["serverpath"] = ServerPath }, "NFS");
        var vdi = await kit.CreateVdiAsync(sr, 8 * StorageKit.MiB);
        var first = StorageKit.Pattern(8 * StorageKit.MiB, 21, (StorageKit.MiB, (int)StorageKit.MiB), (6 * StorageKit.MiB + 4096, 8192));
        await kit.ImportOkAsync(vdi, first);
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        var second = StorageKit.Overlay(first, StorageKit.Pattern(8 * StorageKit.MiB, 22, (0, 65536)), (0, 65536));
        await kit.ImportOkAsync(vdi, second);
        var clone = (string)(await kit.Client.InvokeAsync("VDI.clone", snapshot, new Dictionary<string, object?>()))!;
        Assert.Multiple(async () =>
        {
            Assert.That(StorageKit.Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(StorageKit.Sha256(second)));
            Assert.That(StorageKit.Sha256(await kit.ExportBytesAsync(snapshot)), Is.EqualTo(StorageKit.Sha256(first)));
            Assert.That(StorageKit.Sha256(await kit.ExportBytesAsync(clone)), Is.EqualTo(StorageKit.Sha256(first)));
            Assert.That(StorageKit.Sha256(await StorageKit.QemuVhdToRawAsync(await kit.ExportBytesAsync(vdi, "vhd"))), Is.EqualTo(StorageKit.Sha256(second)));
        });
        foreach (var each in new[] { clone, snapshot, vdi })
        {
            await kit.Client.InvokeAsync("VDI.destroy", each);
        }
        await kit.SettledUtilisationAsync(sr);
        Assert.That(await kit.VdisOfAsync(sr), Is.Empty, "the hidden bases are collected once nothing uses them");
    }
}
