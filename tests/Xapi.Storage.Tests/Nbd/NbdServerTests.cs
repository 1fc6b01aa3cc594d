using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.DataPath;
using Xapi.Storage.Nbd;

namespace Xapi.Storage.Tests.Nbd;

/// <summary>The read-only NBD server against real qemu-img, our client and hand-made bytes.</summary>
[TestFixture]
[Parallelizable(ParallelScope.Self)]
public sealed class NbdServerTests
{
    private const int MiB = 1 << 20;
    private const long Size = 64 * MiB;
    private const string Uuid = "5f0cbd56-3a40-4c1b-9d8e-2a4b1c7d9e01";
    private const string ExportName = "/" + Uuid + "?session_id=OpaqueRef:0b7c-good";
    private const string ForbiddenExport = "/" + Uuid + "?session_id=OpaqueRef:0b7c-bad";

    private static readonly (long Offset, long Length)[] DataRanges = [(0, MiB), (10 * MiB, 3 * MiB), (63 * MiB, MiB)];

    private TempDirectory _dir = null!;
    private string _source = "";
    private string _sourceSha = "";
    private readonly List<NbdServer> _servers = [];

    [SetUp]
    public async Task SetUpAsync()
    {
        _dir = new TempDirectory();
        _source = _dir.File("disk.raw");
        await using (var file = new FileStream(_source, FileMode.CreateNew))
        {
            file.SetLength(Size);
            foreach (var (offset, length) in DataRanges)
            {
                var bytes = new byte[length];
                new Random((int)(offset / MiB)).NextBytes(bytes);
                file.Position = offset;
                file.Write(bytes);
            }
        }
        _sourceSha = Tool.Sha256(_source);
    }

    [TearDown]
    public async Task TearDownAsync()
    {
        foreach (var server in _servers)
        {
            await server.DisposeAsync();
        }
        _servers.Clear();
        _dir.Dispose();
    }

    private IPEndPoint Start(NbdServerOptions? options = null)
    {
        var server = new NbdServer(options ?? new NbdServerOptions(), ResolveAsync, NullLogger<NbdServer>.Instance);
        _servers.Add(server);
        return server.Start(new IPEndPoint(IPAddress.Loopback, 0));
    }

    private ValueTask<IDiskImage?> ResolveAsync(string name, CancellationToken cancellationToken) => name switch
    {
        ExportName => ValueTask.FromResult<IDiskImage?>(RawFileImage.Open(_source, writable: false)),
        ForbiddenExport => throw new UnauthorizedAccessException("the session is not valid"),
        _ => ValueTask.FromResult<IDiskImage?>(null),
    };

    /// <summary>qemu rejects a query string in an nbd:// URL, so the '?' and '=' are percent-encoded (its path is decoded).</summary>
    private static string Url(IPEndPoint endpoint, string export = ExportName) =>
        $"nbd://127.0.0.1:{endpoint.Port}/{export.Replace("?", "%3F", StringComparison.Ordinal).Replace("=", "%3D", StringComparison.Ordinal)}";

    private static async Task<NbdClient> ConnectAsync(IPEndPoint endpoint, string export = ExportName)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endpoint);
        return await NbdClient.ConnectAsync(new NetworkStream(socket, ownsSocket: true), export, CancellationToken.None);
    }

    [Test]
    public async Task Qemu_img_reads_an_export_from_an_nbd_url_and_its_checksum_matches_the_disk()
    {
        var endpoint = Start();
        var output = _dir.File("out.raw");

        await Tool.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Url(endpoint), output);

        Assert.That(Tool.Sha256(output), Is.EqualTo(_sourceSha));
    }

    [Test]
    public async Task Qemu_img_map_over_nbd_sees_exactly_the_written_ranges_as_data()
    {
        var endpoint = Start();

        var json = await Tool.RunAsync("qemu-img", "map", "--output=json", "-f", "raw", Url(endpoint));

        var data = JsonDocument.Parse(json).RootElement.EnumerateArray()
            .Where(e => e.GetProperty("data").GetBoolean())
            .Select(e => (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64()))
            .ToArray();
        Assert.That(data, Is.EqualTo(DataRanges));
    }

    [Test]
    public async Task Qemu_img_reads_over_tls_when_the_server_requires_it()
    {
        using var certificate = TestCertificate.Create();
        var endpoint = Start(new NbdServerOptions { Certificate = certificate, RequireTls = true });
        var credentials = _dir.File("tls");
        TestCertificate.WriteClientDirectory(certificate, credentials);
        var output = _dir.File("out.raw");

        await Tool.RunAsync("qemu-img", "convert",
            "--object", $"tls-creds-x509,id=tls0,dir={credentials},endpoint=client",
            "--image-opts", $"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={endpoint.Port},export={ExportName},tls-creds=tls0",
            "-O", "raw", output);

        Assert.That(Tool.Sha256(output), Is.EqualTo(_sourceSha));
    }

    [Test]
    public async Task A_client_without_tls_is_refused_when_tls_is_required()
    {
        using var certificate = TestCertificate.Create();
        var endpoint = Start(new NbdServerOptions { Certificate = certificate, RequireTls = true });

        var (status, _, stderr) = await Tool.TryRunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Url(endpoint), _dir.File("out.raw"));
        var refused = await Assert.ThrowsAsync<NbdException>(() => ConnectAsync(endpoint));

        Assert.That(status, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("TLS"));
        Assert.That(refused!.OptionReply, Is.EqualTo(0x80000005u), "NBD_REP_ERR_TLS_REQD");
    }

    [Test]
    public async Task Export_name_before_starttls_closes_when_tls_is_required()
    {
        using var certificate = TestCertificate.Create();
        var endpoint = Start(new NbdServerOptions { Certificate = certificate, RequireTls = true });
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(1, System.Text.Encoding.UTF8.GetBytes(ExportName));

        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Our_client_reads_and_maps_an_export_of_our_server()
    {
        var endpoint = Start();
        await using var client = await ConnectAsync(endpoint);
        var read = new byte[Size];
        await client.ReadAsync(0, read, CancellationToken.None);
        var extents = await client.BlockStatusAsync(0, Size, CancellationToken.None);

        Assert.That(client.Size, Is.EqualTo(Size));
        Assert.That(client.ReadOnly, Is.True);
        Assert.That(client.MaximumPayload, Is.EqualTo(32 * MiB));
        Assert.That(Tool.Sha256(read), Is.EqualTo(_sourceSha));
        Assert.That(extents.Where(e => !e.Zero).Select(e => (e.Offset, e.Length)), Is.EqualTo(DataRanges));
        Assert.That(extents.Sum(e => e.Length), Is.EqualTo(Size));
    }

    [Test]
    public async Task An_unknown_export_is_answered_unknown_and_a_refused_session_policy()
    {
        var endpoint = Start();

        var unknown = await Assert.ThrowsAsync<NbdException>(() => ConnectAsync(endpoint, "/no-such-vdi?session_id=OpaqueRef:x"));
        var forbidden = await Assert.ThrowsAsync<NbdException>(() => ConnectAsync(endpoint, ForbiddenExport));

        Assert.That(unknown!.OptionReply, Is.EqualTo(0x80000006u), "NBD_REP_ERR_UNKNOWN");
        Assert.That(forbidden!.OptionReply, Is.EqualTo(0x80000002u), "NBD_REP_ERR_POLICY");
    }

    [Test]
    public async Task An_unknown_export_by_export_name_closes_the_connection()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(1, System.Text.Encoding.UTF8.GetBytes("/nothing"));

        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Export_name_enters_transmission_with_size_and_read_only_flags()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(1, System.Text.Encoding.UTF8.GetBytes(ExportName));
        var reply = await peer.ReadAsync(10);
        await peer.SendRequestAsync(0, 1, 10 * MiB, 4096);
        var (error, cookie) = await peer.ReadSimpleReplyAsync();
        var data = await peer.ReadAsync(4096);

        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(reply), Is.EqualTo(Size));
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)) & 3, Is.EqualTo(3), "HAS_FLAGS|READ_ONLY");
        Assert.That((error, cookie), Is.EqualTo((0u, 1ul)));
        Assert.That(data, Is.EqualTo(File.ReadAllBytes(_source).AsSpan(10 * MiB, 4096).ToArray()));
    }

    [Test]
    public async Task Garbage_closes_that_connection_and_the_server_goes_on_serving_others()
    {
        var endpoint = Start();
        await using (var peer = await RawNbdPeer.ConnectAsync(endpoint))
        {
            await peer.ReadGreetingAsync();
            await peer.WriteAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
        }
        await using (var peer = await RawNbdPeer.ConnectAsync(endpoint))
        {
            await peer.HandshakeAsync();
            await peer.WriteAsync(new byte[64]);
            Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True, "an option without the magic");
        }

        await Tool.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Url(endpoint), _dir.File("out.raw"));
        Assert.That(Tool.Sha256(_dir.File("out.raw")), Is.EqualTo(_sourceSha));
    }

    [Test]
    public async Task A_client_without_fixed_newstyle_is_refused()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        var flags = await peer.ReadGreetingAsync();

        await peer.WriteAsync(RawNbdPeer.U32(0));

        Assert.That(flags & 1, Is.EqualTo(1), "the server offers FIXED_NEWSTYLE");
        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task An_option_longer_than_the_limit_gets_too_big_and_a_close()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(7, [], claimedLength: 1u << 30);
        var (option, type, _) = await peer.ReadOptionReplyAsync();

        Assert.That((option, type), Is.EqualTo((7u, 0x80000009u)), "NBD_REP_ERR_TOO_BIG");
        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Unknown_options_and_list_are_refused_and_haggling_goes_on()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(42, [1, 2, 3]);
        var unknown = await peer.ReadOptionReplyAsync();
        await peer.SendOptionAsync(3, []);
        var list = await peer.ReadOptionReplyAsync();
        await peer.SendOptionAsync(5, []);
        var startTls = await peer.ReadOptionReplyAsync();
        await peer.SendOptionAsync(7, [0, 0, 0, 99, 0, 0]);
        var malformedGo = await peer.ReadOptionReplyAsync();
        var size = await peer.GoAsync(ExportName);

        Assert.That(unknown.Type, Is.EqualTo(0x80000001u), "NBD_REP_ERR_UNSUP");
        Assert.That(list.Type, Is.EqualTo(0x80000002u), "NBD_REP_ERR_POLICY: exports are not listed");
        Assert.That(startTls.Type, Is.EqualTo(0x80000001u), "no certificate: STARTTLS unsupported");
        Assert.That(malformedGo.Type, Is.EqualTo(0x80000003u), "NBD_REP_ERR_INVALID");
        Assert.That(size, Is.EqualTo(Size));
    }

    [Test]
    public async Task Abort_is_acknowledged_and_the_connection_closes()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        await peer.SendOptionAsync(2, []);
        var (_, type, _) = await peer.ReadOptionReplyAsync();

        Assert.That(type, Is.EqualTo(1u), "NBD_REP_ACK");
        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task A_client_silent_past_the_handshake_timeout_is_closed()
    {
        var endpoint = Start(new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(300) });
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();

        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Connections_beyond_the_limit_are_closed_at_once_while_the_others_are_served()
    {
        var endpoint = Start(new NbdServerOptions { MaxConnections = 2 });
        await using var first = await RawNbdPeer.ConnectAsync(endpoint);
        await using var second = await RawNbdPeer.ConnectAsync(endpoint);
        await first.ReadGreetingAsync();
        await second.ReadGreetingAsync();

        await using var third = await RawNbdPeer.ConnectAsync(endpoint);

        Assert.That(await third.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
        await first.WriteAsync(RawNbdPeer.U32(3));
        Assert.That(await first.GoAsync(ExportName), Is.EqualTo(Size));
    }

    [Test]
    public async Task Reads_past_the_end_or_over_32_MiB_get_EINVAL_and_the_connection_goes_on()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();
        await peer.GoAsync(ExportName);

        await peer.SendRequestAsync(0, 1, Size - 512, 1024);
        var pastEnd = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(0, 2, 0, (32 * MiB) + 1);
        var tooLong = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(0, 3, ulong.MaxValue - 10, 512);
        var overflow = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(0, 4, 63 * MiB, 512);
        var good = await peer.ReadSimpleReplyAsync();
        var data = await peer.ReadAsync(512);

        Assert.That(pastEnd, Is.EqualTo((22u, 1ul)));
        Assert.That(tooLong, Is.EqualTo((22u, 2ul)));
        Assert.That(overflow, Is.EqualTo((22u, 3ul)));
        Assert.That(good, Is.EqualTo((0u, 4ul)));
        Assert.That(data, Is.EqualTo(File.ReadAllBytes(_source).AsSpan(63 * MiB, 512).ToArray()));
    }

    [Test]
    public async Task A_read_past_the_end_gets_a_structured_error_chunk_once_structured_replies_are_on()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();
        await peer.SendOptionAsync(8, []);
        Assert.That((await peer.ReadOptionReplyAsync()).Type, Is.EqualTo(1u));
        await peer.GoAsync(ExportName);

        await peer.SendRequestAsync(0, 9, Size, 512);
        var chunk = await peer.ReadAsync(20);
        var body = await peer.ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(16)));

        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(chunk), Is.EqualTo(0x668e33efu));
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(4)), Is.EqualTo(1), "DONE");
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(6)), Is.EqualTo(32769), "NBD_REPLY_TYPE_ERROR");
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(chunk.AsSpan(8)), Is.EqualTo(9ul));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(body), Is.EqualTo(22u), "EINVAL");
    }

    [Test]
    public async Task Writes_trims_and_zeroes_get_EPERM_and_the_stream_stays_in_step()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();
        await peer.GoAsync(ExportName);

        await peer.SendRequestAsync(1, 1, 0, 4096, new byte[4096]);
        var write = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(4, 2, 0, 4096);
        var trim = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(6, 3, 0, 4096);
        var zeroes = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(3, 4, 0, 0);
        var flush = await peer.ReadSimpleReplyAsync();
        await peer.SendRequestAsync(0, 5, 0, 4096);
        var read = await peer.ReadSimpleReplyAsync();
        var data = await peer.ReadAsync(4096);

        Assert.That(new[] { write, trim, zeroes }, Is.EqualTo(new[] { (1u, 1ul), (1u, 2ul), (1u, 3ul) }), "EPERM");
        Assert.That(flush, Is.EqualTo((0u, 4ul)));
        Assert.That(read, Is.EqualTo((0u, 5ul)));
        Assert.That(data, Is.EqualTo(File.ReadAllBytes(_source).AsSpan(0, 4096).ToArray()), "the disk is unchanged");
    }

    [Test]
    public async Task A_request_with_a_bad_magic_closes_the_connection()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();
        await peer.GoAsync(ExportName);

        await peer.SendRequestAsync(0, 1, 0, 512, magic: 0xdeadbeef);

        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Pipelined_reads_are_all_answered_before_disc_closes()
    {
        var endpoint = Start();
        await using var peer = await RawNbdPeer.ConnectAsync(endpoint);
        await peer.HandshakeAsync();
        await peer.GoAsync(ExportName);
        var source = await File.ReadAllBytesAsync(_source);

        for (var i = 0ul; i < 8; i++)
        {
            await peer.SendRequestAsync(0, 100 + i, 10 * MiB + (i * 4 * 65536), 65536);
        }
        await peer.SendRequestAsync(2, 999, 0, 0);
        var answered = new Dictionary<ulong, byte[]>();
        for (var i = 0; i < 8; i++)
        {
            var (error, cookie) = await peer.ReadSimpleReplyAsync();
            Assert.That(error, Is.Zero);
            answered[cookie] = await peer.ReadAsync(65536);
        }

        for (var i = 0ul; i < 8; i++)
        {
            Assert.That(answered[100 + i], Is.EqualTo(source.AsSpan((int)(10 * MiB + (i * 4 * 65536)), 65536).ToArray()));
        }
        Assert.That(await peer.ClosedByServerAsync(TimeSpan.FromSeconds(3)), Is.True);
    }

    [Test]
    public async Task Disposing_the_server_closes_its_connections_and_frees_the_port()
    {
        var server = new NbdServer(new NbdServerOptions(), ResolveAsync, NullLogger<NbdServer>.Instance);
        var endpoint = server.Start(new IPEndPoint(IPAddress.Loopback, 0));
        await using var client = await ConnectAsync(endpoint);

        await server.DisposeAsync();

        Assert.That(server.ActiveConnections, Is.Zero);
        await Assert.ThrowsAsync<SocketException>(async () => await RawNbdPeer.ConnectAsync(endpoint));
    }
}
