using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>
/// The QMP client against a monitor on a real Unix socket that answers as qemu does: a greeting,
/// capabilities negotiation, events interleaved with replies, errors with a class and a description.
/// </summary>
public class QemuMonitorTests
{
    private const string Greeting = """{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": []}}""";

    /// <summary>Serves one client: the greeting, then each request's reply from <paramref name="answer"/> (null closes the connection).</summary>
    private static async Task<List<JsonObject>> ServeAsync(string path, Func<JsonObject, IEnumerable<string>?> answer, TaskCompletionSource listening)
    {
        var requests = new List<JsonObject>();
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        listening.SetResult();
        using var client = await listener.AcceptAsync();
        await using var stream = new NetworkStream(client);
        using var reader = new StreamReader(stream);
        async Task SendAsync(string line) => await stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
        await SendAsync(Greeting);
        while (await reader.ReadLineAsync() is { } line)
        {
            var request = JsonNode.Parse(line)!.AsObject();
            requests.Add(request);
            if (answer(request) is not { } replies)
            {
                break;
            }
            foreach (var reply in replies)
            {
                await SendAsync(reply);
            }
        }
        return requests;
    }

    private static string SocketPath() => Path.Combine(Path.GetTempPath(), $"qmp-{Guid.NewGuid():N}.sock");

    /// <summary>Runs <paramref name="client"/> against a monitor answering as <paramref name="answer"/> says; returns the requests it got.</summary>
    private static async Task<List<JsonObject>> AgainstMonitorAsync(Func<JsonObject, IEnumerable<string>?> answer, Action<string> client)
    {
        var path = SocketPath();
        var listening = new TaskCompletionSource();
        var server = ServeAsync(path, answer, listening);
        await listening.Task;
        try
        {
            client(path);
            return await server;
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public async Task A_command_runs_after_capabilities_negotiation_and_its_return_value_comes_back_past_events()
    {
        JsonElement result = default;
        var requests = await AgainstMonitorAsync(request => (string)request["execute"]! switch
        {
            "qmp_capabilities" => ["""{"return": {}}"""],
            _ => ["""{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_TRAY_MOVED", "data": {"id": "ide-5696", "tray-open": true}}""", """{"return": {"done": 1}}"""],
        }, path =>
        {
            using var monitor = QemuMonitor.Connect(path);
            result = monitor.Execute("blockdev-change-medium", new JsonObject { ["id"] = "ide-5696", ["filename"] = "/sr/disc.qcow2", ["format"] = "qcow2" });
        });
        Assert.Multiple(() =>
        {
            Assert.That(result.GetProperty("done").GetInt32(), Is.EqualTo(1));
            Assert.That(requests.Select(r => (string)r["execute"]!), Is.EqualTo(new[] { "qmp_capabilities", "blockdev-change-medium" }));
            Assert.That((string)requests[1]["arguments"]!["filename"]!, Is.EqualTo("/sr/disc.qcow2"));
        });
    }

    [Test]
    public async Task An_error_reply_and_a_monitor_that_hangs_up_are_failures_naming_the_command()
    {
        QemuMonitorException? refused = null, dropped = null;
        await AgainstMonitorAsync(request => (string)request["execute"]! switch
        {
            "qmp_capabilities" => ["""{"return": {}}"""],
            "eject" => ["""{"error": {"class": "DeviceNotFound", "desc": "Device 'ide-5632' not found"}}"""],
            _ => null,
        }, path =>
        {
            using var monitor = QemuMonitor.Connect(path);
            refused = Assert.Throws<QemuMonitorException>(() => monitor.Execute("eject", new JsonObject { ["id"] = "ide-5632", ["force"] = true }));
            dropped = Assert.Throws<QemuMonitorException>(() => monitor.Execute("add-fd"));
        });
        Assert.That(refused!.Message, Is.EqualTo("QMP eject failed: DeviceNotFound: Device 'ide-5632' not found"));
        Assert.That(dropped!.Message, Does.StartWith("QMP add-fd: the device model closed its monitor"));
    }

    [Test]
    public void A_monitor_that_is_not_there_is_a_failure_naming_its_socket()
    {
        var path = SocketPath();
        var e = Assert.Throws<QemuMonitorException>(() => QemuMonitor.Connect(path));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("cannot be reached"));
    }

    [TestCase("hda", "ide-768")]
    [TestCase("hdb", "ide-832")]
    [TestCase("hdc", "ide-5632")]
    [TestCase("hdd", "ide-5696")]
    public void An_emulated_drive_goes_by_the_id_libxl_gave_it_in_qemu(string guestDevice, string id) =>
        Assert.That(XenDisk.EmulatedDriveId(guestDevice), Is.EqualTo(id));
}
