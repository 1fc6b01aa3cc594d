using System.Net.Http.Headers;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>A thin SR with a size (SR.create's physical_size) that runs out of room.</summary>
public class SrFullTests
{
    [Test]
    public async Task An_import_past_the_srs_room_fails_its_task_with_sr_full_and_leaves_the_sr_within_its_size()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var host = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!)[0]!;
        var location = Path.Combine(daemon.Host.Options.DataDir, "small");
        const long quota = 8L << 20;
        var sr = (string)(await client.InvokeAsync("SR.create", host, new Dictionary<string, object?> { ["location"] = location },
            quota.ToString(System.Globalization.CultureInfo.InvariantCulture), "small", "", "ext", "user", false, new Dictionary<string, object?>()))!;
        Assert.That(await client.InvokeAsync("SR.get_physical_size", sr), Is.EqualTo(quota.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        // Thin: a disk larger than the SR is made, as on real hosts.
        var vdi = (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = "big", ["name_description"] = "", ["SR"] = sr, ["virtual_size"] = (64L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["type"] = "user", ["sharable"] = false, ["read_only"] = false, ["other_config"] = new Dictionary<string, object?>(),
        }))!;
        var task = (string)(await client.InvokeAsync("task.create", "import", ""))!;
        var data = new byte[16 << 20];
        new Random(3).NextBytes(data);
        using (var http = new HttpClient())
        {
            var content = new ByteArrayContent(data);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            try
            {
                await http.PutAsync(new Uri(daemon.Uri, $"/import_raw_vdi?session_id={client.Session}&vdi={vdi}&task_id={task}"), content);
            }
            catch (HttpRequestException)
            {
                // The daemon may drop the connection once it has refused the rest of the body.
            }
        }
        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("task.get_status", task), Is.EqualTo("failure"));
            var error = (IReadOnlyList<object?>)(await client.InvokeAsync("task.get_error_info", task))!;
            Assert.That(error[0], Is.EqualTo("SR_FULL"));
            await client.InvokeAsync("SR.scan", sr);
            var used = long.Parse((string)(await client.InvokeAsync("SR.get_physical_utilisation", sr))!, System.Globalization.CultureInfo.InvariantCulture);
            Assert.That(used, Is.LessThanOrEqualTo(quota));
        });
    }
}
