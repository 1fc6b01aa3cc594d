using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>
/// <c>POST /cli</c> spoken by a hand-made client that follows the documented framing byte for
/// byte (COMPATIBILITY.md, and real xe's cli_protocol.ml), not this project's own xe or framing
/// code: what a real xe binary sees on the wire.
/// </summary>
[TestFixture]
[CancelAfter(120_000)]
public sealed class ThinCliProtocolTests : SimulatedHostFixture
{
    private static readonly byte[] ExpectedGreeting =
        [.. "XenSource thin CLI protocol"u8, 0, 0, 0, 0, 2, 0, 0, 0];

    private const int CommandTag = 9;
    private const int ResponseTag = 10;
    private const int PrintTag = 0;
    private const int ExitTag = 4;
    private const int HttpPutTag = 13;
    private const int ErrorTag = 14;
    private const int OkTag = 5;
    private const int FailedTag = 6;
    private const int WaitTag = 18;

    private async Task<string> DefaultSrUuidAsync()
    {
        var pools = (IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!;
        var sr = (string)(await Client.InvokeAsync("pool.get_default_SR", pools[0]))!;
        return (string)(await Client.InvokeAsync("SR.get_uuid", sr))!;
    }

    private async Task<(string Ref, string Uuid)> NewVdiAsync(long size)
    {
        var pools = (IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!;
        var record = new Dictionary<string, object?>
        {
            ["name_label"] = "protocol test disk",
            ["name_description"] = "",
            ["SR"] = await Client.InvokeAsync("pool.get_default_SR", pools[0]),
            ["virtual_size"] = size.ToString(CultureInfo.InvariantCulture),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
            ["sm_config"] = new Dictionary<string, object?>(),
        };
        var vdi = (string)(await Client.InvokeAsync("VDI.create", record))!;
        return (vdi, (string)(await Client.InvokeAsync("VDI.get_uuid", vdi))!);
    }

    [Test]
    public async Task A_creating_command_greets_prints_the_new_uuid_and_exits_zero()
    {
        var sr = await DefaultSrUuidAsync();
        await using var cli = await RawCli.OpenAsync(Daemon, "vdi-create", $"sr-uuid={sr}", "name-label=from the wire", "virtual-size=4MiB");

        Assert.That(await cli.ReadExactAsync(ExpectedGreeting.Length), Is.EqualTo(ExpectedGreeting), "magic, then int32-LE 0 and 2");
        await cli.WriteAsync(ExpectedGreeting);

        var print = new FrameReader(await cli.ReadFrameAsync());
        Assert.That((print.Int(), print.Int()), Is.EqualTo((CommandTag, PrintTag)));
        var uuid = print.String();
        var vdi = (string)(await Client.InvokeAsync("VDI.get_by_uuid", uuid))!;
        Assert.That(await Client.InvokeAsync("VDI.get_name_label", vdi), Is.EqualTo("from the wire"));
        Assert.That(await Client.InvokeAsync("VDI.get_virtual_size", vdi), Is.EqualTo("4194304"));

        await cli.ExpectExitAsync(0);
    }

    [Test]
    public async Task An_import_asks_for_a_put_of_the_raw_vdi_and_the_client_does_it_then_exit_zero_and_the_disk_holds_the_bytes()
    {
        var (vdi, uuid) = await NewVdiAsync(4L << 20);
        var data = new byte[3 << 20];
        new Random(11).NextBytes(data);
        await using var cli = await RawCli.OpenAsync(Daemon, "vdi-import", $"uuid={uuid}", "filename=disk.raw", "format=raw");
        await cli.ReadExactAsync(ExpectedGreeting.Length);
        await cli.WriteAsync(ExpectedGreeting);

        var put = new FrameReader(await cli.ReadFrameAsync());
        Assert.That((put.Int(), put.Int()), Is.EqualTo((CommandTag, HttpPutTag)));
        Assert.That(put.String(), Is.EqualTo("disk.raw"));
        var url = put.String();
        Assert.That(url, Does.Match($"^/import_raw_vdi\\?session_id=OpaqueRef:[-0-9a-f]+&task_id=OpaqueRef:[-0-9a-f]+&vdi={vdi}&format=raw$"));

        await cli.WriteFrameAsync(ResponseTag, WaitTag);
        using (var http = new TcpClient())
        {
            await http.ConnectAsync(Daemon.Uri.Host, Daemon.Uri.Port);
            var stream = http.GetStream();
            // As real xe: the head, then the status line and headers, and only then the body.
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"PUT {url} HTTP/1.0\r\nContent-length: {data.Length}\r\n\r\n"));
            var head = await ReadHeadAsync(stream);
            Assert.That(head, Does.Match("^HTTP/1\\.[01] 200 "));
            await stream.WriteAsync(data);
            await cli.WriteFrameAsync(ResponseTag, WaitTag);
            // And as real xe: the socket is closed at once, without waiting for the reply.
        }
        await cli.WriteFrameAsync(ResponseTag, OkTag);

        await cli.ExpectExitAsync(0);
        using var download = new HttpClient { BaseAddress = Daemon.Uri };
        var exported = await download.GetByteArrayAsync($"/export_raw_vdi?session_id={Client.Session}&vdi={vdi}");
        Assert.That(exported, Has.Length.EqualTo(4 << 20));
        Assert.That(exported.AsSpan(0, data.Length).SequenceEqual(data), Is.True, "the uploaded bytes");
        Assert.That(exported.AsSpan(data.Length).ContainsAnyExcept((byte)0), Is.False, "zeros after them");
    }

    [Test]
    public async Task A_client_that_cannot_do_the_put_gets_the_error_message_client_error_then_exit_one_and_no_task_stays()
    {
        var (_, uuid) = await NewVdiAsync(1L << 20);
        await using var cli = await RawCli.OpenAsync(Daemon, "vdi-import", $"uuid={uuid}", "filename=missing.raw");
        await cli.ReadExactAsync(ExpectedGreeting.Length);
        await cli.WriteAsync(ExpectedGreeting);
        var put = new FrameReader(await cli.ReadFrameAsync());
        Assert.That((put.Int(), put.Int()), Is.EqualTo((CommandTag, HttpPutTag)));

        await cli.WriteFrameAsync(ResponseTag, FailedTag);

        var error = new FrameReader(await cli.ReadFrameAsync());
        Assert.That((error.Int(), error.Int()), Is.EqualTo((CommandTag, ErrorTag)));
        Assert.That(error.String(), Is.EqualTo("CLIENT_ERROR"));
        Assert.That(error.Int(), Is.Zero, "no parameters");
        Assert.That(error.AtEnd, Is.True);
        await cli.ExpectExitAsync(1);
        var tasks = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("task.get_all_records"))!;
        Assert.That(tasks.Values.Cast<IReadOnlyDictionary<string, object?>>().Select(t => t["name_label"]), Has.None.EqualTo("VDI import"));
    }

    [Test]
    public async Task A_garbage_greeting_ends_the_connection_and_the_daemon_serves_the_next_command()
    {
        var sr = await DefaultSrUuidAsync();
        await using (var bad = await RawCli.OpenAsync(Daemon, "vdi-create", $"sr-uuid={sr}", "name-label=never made", "virtual-size=1MiB"))
        {
            Assert.That(await bad.ReadExactAsync(ExpectedGreeting.Length), Is.EqualTo(ExpectedGreeting));
            await bad.WriteAsync(Encoding.ASCII.GetBytes("Not the thin CLI protocol at all!!!"));
            Assert.That(await bad.ReadToEndAsync(), Is.Empty, "nothing after a greeting the server cannot read");
        }
        var vdis = (IReadOnlyList<object?>)(await Client.InvokeAsync("VDI.get_by_name_label", "never made"))!;
        Assert.That(vdis, Is.Empty);

        await using var good = await RawCli.OpenAsync(Daemon, "vdi-create", $"sr-uuid={sr}", "name-label=made after", "virtual-size=1MiB");
        await good.ReadExactAsync(ExpectedGreeting.Length);
        await good.WriteAsync(ExpectedGreeting);
        var print = new FrameReader(await good.ReadFrameAsync());
        Assert.That((print.Int(), print.Int()), Is.EqualTo((CommandTag, PrintTag)));
        await good.ExpectExitAsync(0);
    }

    [Test]
    public async Task A_post_to_another_path_still_reaches_xml_rpc()
    {
        var call = "<?xml version=\"1.0\"?><methodCall><methodName>session.login_with_password</methodName><params>"
            + $"<param><value>root</value></param><param><value>{TestDaemon.Password}</value></param></params></methodCall>";
        var body = Encoding.UTF8.GetBytes(call);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(Daemon.Uri.Host, Daemon.Uri.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"POST / HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: {body.Length}\r\n\r\n"));
        await stream.WriteAsync(body);
        using var reply = new MemoryStream();
        await stream.CopyToAsync(reply);
        var text = Encoding.UTF8.GetString(reply.ToArray());
        Assert.That(text, Does.StartWith("HTTP/1.1 200").Or.StartWith("HTTP/1.0 200"));
        Assert.That(text, Does.Contain("<name>Status</name><value>Success</value>"));
        Assert.That(text, Does.Contain("OpaqueRef:"));
    }

    private static async Task<string> ReadHeadAsync(Stream stream)
    {
        var head = new List<byte>();
        var one = new byte[1];
        while (!(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n'))
        {
            if (await stream.ReadAsync(one) == 0)
            {
                throw new EndOfStreamException("the server closed before its head ended: " + Encoding.ASCII.GetString(head.ToArray()));
            }
            head.Add(one[0]);
        }
        return Encoding.ASCII.GetString(head.ToArray());
    }

    /// <summary>The client's end of one <c>POST /cli</c> connection, framed by hand.</summary>
    private sealed class RawCli : IAsyncDisposable
    {
        private readonly TcpClient _tcp;
        private readonly NetworkStream _stream;

        private RawCli(TcpClient tcp)
        {
            _tcp = tcp;
            _stream = tcp.GetStream();
        }

        public static async Task<RawCli> OpenAsync(TestDaemon daemon, params string[] argv)
        {
            var tcp = new TcpClient();
            await tcp.ConnectAsync(daemon.Uri.Host, daemon.Uri.Port);
            var cli = new RawCli(tcp);
            var body = Encoding.UTF8.GetBytes(string.Join("\n", [.. argv, "username=root", "password=" + TestDaemon.Password]));
            await cli.WriteAsync(Encoding.ASCII.GetBytes($"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/0.2\r\ncontent-length: {body.Length}\r\n\r\n"));
            await cli.WriteAsync(body);
            return cli;
        }

        public async Task WriteAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

        /// <summary>A frame of int32-LE values: its length, then the values.</summary>
        public async Task WriteFrameAsync(params int[] values)
        {
            var frame = new byte[4 + (4 * values.Length)];
            BinaryPrimitives.WriteInt32LittleEndian(frame, 4 * values.Length);
            for (var i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(4 + (4 * i)), values[i]);
            }
            await WriteAsync(frame);
        }

        public async Task<byte[]> ReadExactAsync(int count)
        {
            var buffer = new byte[count];
            await _stream.ReadExactlyAsync(buffer);
            return buffer;
        }

        public async Task<byte[]> ReadFrameAsync()
        {
            var length = BinaryPrimitives.ReadInt32LittleEndian(await ReadExactAsync(4));
            return await ReadExactAsync(length);
        }

        public async Task ExpectExitAsync(int code)
        {
            var frame = await ReadFrameAsync();
            var exit = new FrameReader(frame);
            Assert.That((exit.Int(), exit.Int(), exit.Int()), Is.EqualTo((CommandTag, ExitTag, code)), $"Exit with its status, not {Encoding.Latin1.GetString(frame)}");
            Assert.That(exit.AtEnd, Is.True);
            Assert.That(await ReadToEndAsync(), Is.Empty, "nothing after Exit");
        }

        public async Task<byte[]> ReadToEndAsync()
        {
            using var rest = new MemoryStream();
            try
            {
                await _stream.CopyToAsync(rest);
            }
            catch (IOException)
            {
                // A reset is an end too.
            }
            return rest.ToArray();
        }

        public ValueTask DisposeAsync()
        {
            _tcp.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private sealed class FrameReader(byte[] frame)
    {
        private int _position;

        public bool AtEnd => _position == frame.Length;

        public int Int()
        {
            var value = BinaryPrimitives.ReadInt32LittleEndian(frame.AsSpan(_position));
            _position += 4;
            return value;
        }

        public string String()
        {
            var length = Int();
            var value = Encoding.UTF8.GetString(frame, _position, length);
            _position += length;
            return value;
        }
    }
}
