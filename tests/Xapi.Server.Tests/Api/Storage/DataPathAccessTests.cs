using System.Net;
using System.Net.Http.Headers;
using static Xapi.Server.Tests.Api.Storage.StorageKit;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>Who may read a disk over HTTP, and how a client stops a transfer it started.</summary>
public class DataPathAccessTests
{
    [Test]
    public async Task An_export_without_credentials_is_refused_with_401_and_a_basic_challenge_and_basic_auth_as_root_works()
    {
        await using var kit = await StartAsync();
        var vdi = await kit.CreateVdiAsync(await kit.DefaultSrAsync(), 2 * MiB);
        var data = Pattern(2 * MiB, 5, (12_345, 678));
        await kit.ImportOkAsync(vdi, data);

        using (var anonymous = await kit.Http.GetAsync($"/export_raw_vdi?vdi={vdi}"))
        {
            Assert.That(anonymous.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(anonymous.Headers.WwwAuthenticate.Select(h => h.Scheme), Does.Contain("Basic"));
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, $"/export_raw_vdi?vdi={vdi}"))
        {
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("root:not-the-password"u8.ToArray()));
            using var response = await kit.Http.SendAsync(wrong);
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
        }
        using (var forged = await kit.Http.GetAsync($"/export_raw_vdi?vdi={vdi}&session_id=OpaqueRef:00000000-0000-0000-0000-000000000000"))
        {
            Assert.That(forged.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
        }

        using var basic = new HttpRequestMessage(HttpMethod.Get, $"/export_raw_vdi?vdi={vdi}");
        basic.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("root:" + TestDaemon.Password)));
        using var ok = await kit.Http.SendAsync(basic);
        Assert.That(ok.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(Sha256(await ok.Content.ReadAsByteArrayAsync()), Is.EqualTo(Sha256(data)));
    }

    [Test]
    public async Task A_transfer_bound_to_an_unknown_task_is_refused_with_404_and_one_bound_to_the_clients_task_reports_on_it()
    {
        await using var kit = await StartAsync();
        var vdi = await kit.CreateVdiAsync(await kit.DefaultSrAsync(), 2 * MiB);
        using (var unknown = await kit.Http.GetAsync($"/export_raw_vdi?session_id={kit.Session}&vdi={vdi}&task_id=OpaqueRef:11111111-2222-3333-4444-555555555555"))
        {
            Assert.That(unknown.StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        }

        var task = (string)(await kit.Client.InvokeAsync("task.create", "backup", "a client's own task"))!;
        using var response = await kit.Http.GetAsync($"/export_raw_vdi?session_id={kit.Session}&vdi={vdi}&task_id={task}");
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(response.Headers.GetValues("task-id").Single(), Is.EqualTo(task));
        Assert.That((await response.Content.ReadAsByteArrayAsync()).Length, Is.EqualTo(2 * MiB));
        var done = await kit.Client.WatchTaskAsync(task);
        Assert.That((done["status"], done["progress"]), Is.EqualTo(("success", 1.0)));
    }

    [Test]
    public async Task A_cancelled_export_ends_its_task_cancelled_and_cuts_the_stream()
    {
        await using var kit = await StartAsync();
        // Large and thin: the export streams zeros far longer than the client waits.
        var vdi = await kit.CreateVdiAsync(await kit.DefaultSrAsync(), 64L << 30);
        using var response = await kit.Http.GetAsync($"/export_raw_vdi?session_id={kit.Session}&vdi={vdi}", HttpCompletionOption.ResponseHeadersRead);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var task = response.Headers.GetValues("task-id").Single();
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[1 << 20];
        await body.ReadAtLeastAsync(buffer, buffer.Length);

        await kit.Client.InvokeAsync("task.cancel", task);
        var done = await kit.Client.WatchTaskAsync(task);
        Assert.That(done["status"], Is.EqualTo("cancelled"));
        Assert.That(((IReadOnlyList<object?>)done["error_info"]!)[0], Is.EqualTo("TASK_CANCELLED"));
        var received = (long)buffer.Length;
        var cut = false;
        try
        {
            while (true)
            {
                var read = await body.ReadAsync(buffer);
                if (read == 0)
                {
                    break;
                }
                received += read;
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            cut = true;
        }
        Assert.That(cut || received < 64L << 30, Is.True, "the client does not receive the whole disk");
    }

    [Test]
    public async Task A_cancelled_import_ends_its_task_cancelled_and_the_disk_keeps_its_data()
    {
        await using var kit = await StartAsync();
        var vdi = await kit.CreateVdiAsync(await kit.DefaultSrAsync(), 8 * MiB);
        var data = Pattern(8 * MiB, 6, (0, 100), (5 * MiB, 1000));
        await kit.ImportOkAsync(vdi, data);

        // An uploader that announces the whole disk, sends 1 MiB and stalls: by hand, since
        // HttpClient reads no answer before it has sent the whole body.
        using var socket = new System.Net.Sockets.TcpClient();
        await socket.ConnectAsync(kit.Daemon.Uri.Host, kit.Daemon.Uri.Port);
        var stream = socket.GetStream();
        var head = $"PUT /import_raw_vdi?session_id={kit.Session}&vdi={vdi} HTTP/1.1\r\nHost: {kit.Daemon.Uri.Authority}\r\nContent-Length: {Number(8 * MiB)}\r\n\r\n";
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head));
        await stream.WriteAsync(new byte[MiB]);
        var answer = await ReadHeadAsync(stream);
        Assert.That(answer, Does.StartWith("HTTP/1.1 200"));
        var task = answer.Split("\r\n").Single(l => l.StartsWith("task-id:", StringComparison.OrdinalIgnoreCase))["task-id:".Length..].Trim();

        await kit.Client.InvokeAsync("task.cancel", task);
        var done = await kit.Client.WatchTaskAsync(task);
        Assert.That(done["status"], Is.EqualTo("cancelled"));
        Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(Sha256(data)), "the partial upload wrote nothing");
    }

    private static async Task<string> ReadHeadAsync(Stream stream)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var head = new List<byte>();
        var one = new byte[1];
        while (head.Count < 8192 && !(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n'))
        {
            if (await stream.ReadAsync(one, deadline.Token) == 0)
            {
                break;
            }
            head.Add(one[0]);
        }
        return System.Text.Encoding.ASCII.GetString(head.ToArray());
    }

    [TestCase(false, TestName = "A copy cancelled at once ends cancelled and leaves no disk and no space used on the target")]
    [TestCase(true, TestName = "A copy cancelled while it moves data ends cancelled and leaves no disk and no space used on the target")]
    public async Task A_cancelled_copy_ends_cancelled_and_leaves_no_disk_and_no_space_used_on_the_target(bool whileMovingData)
    {
        await using var kit = await StartAsync();
        var source = await kit.CreateVdiAsync(await kit.DefaultSrAsync(), 64 * MiB);
        // One byte in every 4 MiB: every part of the disk holds data the copy must move.
        var data = Pattern(64 * MiB, 7, Enumerable.Range(0, 16).Select(i => (i * 4 * MiB + 4095, 1)).ToArray());
        await kit.ImportOkAsync(source, data);
        var location = Directory.CreateTempSubdirectory("xapi-copy-target-").FullName;
        using var cleanup = new DirectoryCleanup(location);
        var target = await kit.CreateSrAsync("ext", new Dictionary<string, object?> { ["location"] = location }, "target");
        var before = await kit.SettledUtilisationAsync(target);
        var files = Fingerprint(location);

        var task = (string)(await kit.Client.InvokeAsync("Async.VDI.copy", source, target, "OpaqueRef:NULL", "OpaqueRef:NULL"))!;
        if (whileMovingData)
        {
            var moving = await kit.Client.WatchTaskAsync(task, r => (double)r["progress"]! > 0 || (string)r["status"]! != "pending");
            Assert.That(moving["status"], Is.EqualTo("pending"), "the copy is still running when it is cancelled");
        }
        await kit.Client.InvokeAsync("task.cancel", task);
        var done = await kit.Client.WatchTaskAsync(task);

        Assert.Multiple(async () =>
        {
            Assert.That(done["status"], Is.EqualTo("cancelled"), string.Join(" ", (IReadOnlyList<object?>)done["error_info"]!));
            Assert.That(await kit.VdisOfAsync(target), Is.Empty, "the VDI the copy made is destroyed again");
            Assert.That(await kit.SettledUtilisationAsync(target), Is.EqualTo(before));
            Assert.That(Fingerprint(location).Keys, Is.EquivalentTo(files.Keys), "no image is left in the target's directory");
        });
    }
}
