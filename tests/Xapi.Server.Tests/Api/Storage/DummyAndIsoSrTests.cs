using static Xapi.Server.Tests.Api.Storage.StorageKit;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>The SR types that hold no writable data here: dummy (stores nothing) and the ISO library (read-only images).</summary>
public class DummyAndIsoSrTests
{
    [Test]
    public async Task A_dummy_sr_keeps_disk_records_through_their_lifecycle_reads_zeros_and_drops_what_is_imported()
    {
        await using var kit = await StartAsync();
        var sr = await kit.CreateSrAsync("dummy", new Dictionary<string, object?>(), "dummy");
        var vdi = await kit.CreateVdiAsync(sr, 4 * MiB);
        await kit.ImportOkAsync(vdi, Pattern(4 * MiB, 3, (100, 5000)));
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        var clone = (string)(await kit.Client.InvokeAsync("VDI.clone", snapshot, new Dictionary<string, object?>()))!;
        await kit.Client.InvokeAsync("VDI.resize", vdi, Number(6 * MiB));

        var zeros = Sha256(new byte[6 * MiB]);
        Assert.Multiple(async () =>
        {
            Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(zeros), "a dummy disk reads as zeros, whatever was imported");
            Assert.That(Sha256(await QemuVhdToRawAsync(await kit.ExportBytesAsync(vdi, "vhd"))), Is.EqualTo(zeros));
            Assert.That(Sha256(await kit.ExportBytesAsync(clone)), Is.EqualTo(Sha256(new byte[4 * MiB])));
            Assert.That((await kit.RecordAsync("VDI", snapshot))["is_a_snapshot"], Is.True);
        });

        // A dummy disk copied to real storage is a real disk of zeros.
        var task = (string)(await kit.Client.InvokeAsync("Async.VDI.copy", vdi, await kit.DefaultSrAsync(), "OpaqueRef:NULL", "OpaqueRef:NULL"))!;
        var done = await kit.Client.WatchTaskAsync(task);
        Assert.That(done["status"], Is.EqualTo("success"), string.Join(" ", (IReadOnlyList<object?>)done["error_info"]!));
        var copy = (string)Xapi.Protocol.XmlRpcReader.ReadValueFragment((string)done["result"]!, Xapi.Protocol.RpcLimits.Default)!;
        Assert.That(Sha256(await kit.ExportBytesAsync(copy)), Is.EqualTo(zeros));

        foreach (var each in new[] { clone, snapshot, vdi })
        {
            await kit.Client.InvokeAsync("VDI.destroy", each);
        }
        Assert.That(await kit.VdisOfAsync(sr), Is.Empty);
        var pbd = (string)((IReadOnlyList<object?>)(await kit.RecordAsync("SR", sr))["PBDs"]!)[0]!;
        await kit.Client.InvokeAsync("PBD.unplug", pbd);
        await kit.Client.InvokeAsync("SR.destroy", sr);
        Assert.That((IReadOnlyList<object?>)(await kit.Client.InvokeAsync("SR.get_all"))!, Does.Not.Contain(sr));
    }

    [Test]
    public async Task An_iso_dropped_in_the_library_appears_on_scan_read_only_with_its_size_exports_its_bytes_and_goes_when_removed()
    {
        await using var kit = await StartAsync();
        var sr = await kit.SrOfTypeAsync("iso");
        var library = Path.Combine(kit.Daemon.Host.Options.DataDir, "iso");
        // An odd size (not a whole number of MiB), with data at both ends.
        var image = Pattern(3 * MiB + 2048, 4, (0, 2048), (MiB + 7, 333), (3 * MiB, 2048));
        var path = Path.Combine(library, "installer.iso");
        await File.WriteAllBytesAsync(path, image);

        await kit.Client.InvokeAsync("SR.scan", sr);
        var vdis = await kit.VdisOfAsync(sr);
        Assert.That(vdis, Has.Count.EqualTo(1));
        var record = await kit.RecordAsync("VDI", vdis[0]);
        Assert.Multiple(() =>
        {
            Assert.That(record["location"], Is.EqualTo("installer.iso"));
            Assert.That(record["name_label"], Is.EqualTo("installer.iso"));
            Assert.That(record["read_only"], Is.True);
            Assert.That(record["virtual_size"], Is.EqualTo(Number(image.Length)));
        });
        Assert.That(Sha256(await kit.ExportBytesAsync(vdis[0])), Is.EqualTo(Sha256(image)));

        var import = await kit.ImportAsync(vdis[0], new byte[4096]);
        Assert.Multiple(() =>
        {
            Assert.That(import.Status, Is.Not.EqualTo(System.Net.HttpStatusCode.OK));
            Assert.That(import.ErrorInfo, Is.EqualTo(new[] { "VDI_READONLY", vdis[0] }));
        });
        Assert.That(Sha256(await File.ReadAllBytesAsync(path)), Is.EqualTo(Sha256(image)), "the image is untouched");

        File.Delete(path);
        await kit.Client.InvokeAsync("SR.scan", sr);
        Assert.That(await kit.VdisOfAsync(sr), Is.Empty);
    }
}
