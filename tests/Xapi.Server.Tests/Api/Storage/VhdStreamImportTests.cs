using System.Net;
using System.Security.Cryptography;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary><c>PUT /import</c> of a VHD stream made by a real tool (qemu-img).</summary>
public class VhdStreamImportTests
{
    [Test]
    public async Task A_vhd_put_to_import_becomes_a_new_vdi_with_the_same_bytes()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var work = Directory.CreateTempSubdirectory("vhd-import-").FullName;
        try
        {
            var data = new byte[6 << 20];
            new Random(5).NextBytes(data.AsSpan(2 << 20, 1 << 20));
            data.AsSpan((5 << 20) + 512, 512).Fill(0x77);
            var raw = Path.Combine(work, "disk.raw");
            var vhd = Path.Combine(work, "disk.vhd");
            await File.WriteAllBytesAsync(raw, data);
            await LocalSrTests.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", raw, vhd);

            using var http = new HttpClient();
            await using (var body = File.OpenRead(vhd))
            {
                var reply = await http.PutAsync(new Uri(daemon.Uri, $"/import?session_id={client.Session}"), new StreamContent(body));
                Assert.That(reply.StatusCode, Is.EqualTo(HttpStatusCode.OK));
                var task = reply.Headers.GetValues("task-id").Single();
                Assert.That(await client.InvokeAsync("task.get_status", task), Is.EqualTo("success"), string.Join(" ", (IReadOnlyList<object?>)(await client.InvokeAsync("task.get_error_info", task))!));
                var vdi = System.Text.RegularExpressions.Regex.Match((string)(await client.InvokeAsync("task.get_result", task))!, "OpaqueRef:[0-9a-f-]+").Value;
                Assert.That(await client.InvokeAsync("VDI.get_name_label", vdi), Is.EqualTo("Imported VDI"));
                var exported = await http.GetByteArrayAsync(new Uri(daemon.Uri, $"/export_raw_vdi?session_id={client.Session}&vdi={vdi}&format=raw"));
                Assert.That(SHA256.HashData(exported.AsSpan(0, data.Length)), Is.EqualTo(SHA256.HashData(data)));
            }

            var before = ((IReadOnlyList<object?>)(await client.InvokeAsync("VDI.get_all"))!).Count;
            var refused = await http.PutAsync(new Uri(daemon.Uri, $"/import?session_id={client.Session}"), new ByteArrayContent(new byte[4096]));
            Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
            var failed = refused.Headers.GetValues("task-id").Single();
            Assert.That(((IReadOnlyList<object?>)(await client.InvokeAsync("task.get_error_info", failed))!)[0], Is.EqualTo("IMPORT_ERROR"));
            Assert.That(((IReadOnlyList<object?>)(await client.InvokeAsync("VDI.get_all"))!).Count, Is.EqualTo(before), "a refused import makes no VDI");
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
