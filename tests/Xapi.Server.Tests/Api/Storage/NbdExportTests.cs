using System.Net.Http.Headers;
using System.Security.Cryptography;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>A real NBD client (qemu-img) reading a VDI from the daemon's NBD server.</summary>
public class NbdExportTests
{
    [Test]
    public async Task Qemu_img_reads_a_vdi_over_nbd_and_gets_the_imported_bytes()
    {
        await using var daemon = await TestDaemon.StartAsync(options => options.NbdPort = 0);
        using var client = await daemon.LoginAsync();
        var sr = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("SR.get_by_name_label", "Local storage"))!)[0]!;
        const long size = 8L << 20;
        var vdi = (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = "nbd", ["name_description"] = "", ["SR"] = sr, ["virtual_size"] = size.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["type"] = "user", ["sharable"] = false, ["read_only"] = false, ["other_config"] = new Dictionary<string, object?>(),
        }))!;
        var data = new byte[size];
        new Random(9).NextBytes(data.AsSpan(1 << 20, 3 << 20));
        data.AsSpan(7 << 20, 4096).Fill(0x5a);
        using (var http = new HttpClient())
        {
            var content = new ByteArrayContent(data);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            var reply = await http.PutAsync(new Uri(daemon.Uri, $"/import_raw_vdi?session_id={client.Session}&vdi={vdi}"), content);
            Assert.That(reply.IsSuccessStatusCode, Is.True);
            var task = reply.Headers.GetValues("task-id").Single();
            Assert.That(await client.InvokeAsync("task.get_status", task), Is.EqualTo("success"));
        }

        Assert.That((IReadOnlyList<object?>)(await client.InvokeAsync("VDI.get_nbd_info", vdi))!, Is.Empty, "no network has an NBD purpose yet");
        var pif = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("PIF.get_all"))!)[0]!;
        var network = (string)(await client.InvokeAsync("PIF.get_network", pif))!;
        await client.InvokeAsync("network.add_purpose", network, "insecure_nbd");
        var info = (IReadOnlyDictionary<string, object?>)((IReadOnlyList<object?>)(await client.InvokeAsync("VDI.get_nbd_info", vdi))!).Single()!;
        var uuid = (string)(await client.InvokeAsync("VDI.get_uuid", vdi))!;
        Assert.That(info["exportname"], Is.EqualTo($"/{uuid}?session_id={client.Session}"));
        var port = Convert.ToInt32(info["port"], System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(port, Is.EqualTo(daemon.Host.NbdEndPoint!.Port));

        var output = Path.Combine(Path.GetTempPath(), $"nbd-{Guid.NewGuid():N}.raw");
        try
        {
            // qemu takes the export name from the URL path, so its '?' must be percent-encoded.
            var url = $"nbd://127.0.0.1:{port}/{Uri.EscapeDataString((string)info["exportname"]!)}";
            await LocalSrTests.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", url, output);
            Assert.That(SHA256.HashData(await File.ReadAllBytesAsync(output)), Is.EqualTo(SHA256.HashData(data)));
        }
        finally
        {
            File.Delete(output);
        }

        var refused = Path.Combine(Path.GetTempPath(), $"nbd-{Guid.NewGuid():N}.raw");
        var forged = $"nbd://127.0.0.1:{port}/{Uri.EscapeDataString($"/{uuid}?session_id=OpaqueRef:{Guid.NewGuid()}")}";
        var start = new System.Diagnostics.ProcessStartInfo("qemu-img") { RedirectStandardError = true };
        foreach (var argument in new[] { "convert", "-f", "raw", "-O", "raw", forged, refused })
        {
            start.ArgumentList.Add(argument);
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.That(process.ExitCode, Is.Not.Zero, "an export name without a valid session is refused");
        File.Delete(refused);
    }
}
