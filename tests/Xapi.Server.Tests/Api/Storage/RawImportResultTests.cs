using System.Globalization;
using System.Net;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>What the task of a raw import says once the bytes are in.</summary>
public class RawImportResultTests
{
    [Test]
    public async Task A_raw_import_task_succeeds_with_the_vdi_as_its_result()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var pools = (IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!;
        var sr = (string)(await client.InvokeAsync("pool.get_default_SR", pools[0]))!;
        var vdi = (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = "imported",
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = (1L << 20).ToString(CultureInfo.InvariantCulture),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
        }))!;
        var body = new byte[1 << 20];
        Random.Shared.NextBytes(body);
        using var http = new HttpClient();
        using var content = new ByteArrayContent(body);
        using var response = await http.PutAsync(new Uri(daemon.Uri, $"/import_raw_vdi?session_id={Uri.EscapeDataString(client.Session!)}&vdi={Uri.EscapeDataString(vdi)}"), content);
        await response.Content.ReadAsByteArrayAsync();
        var task = response.Headers.GetValues("task-id").Single();

        var record = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("task.get_record", task))!;
        Assert.Multiple(() =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(record["status"], Is.EqualTo("success"), string.Join(" ", (IReadOnlyList<object?>)record["error_info"]!));
            Assert.That(record["result"], Is.EqualTo($"<value>{vdi}</value>"));
        });
    }
}
