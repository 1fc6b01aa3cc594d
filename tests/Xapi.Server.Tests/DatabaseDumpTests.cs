using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Server.Tests;

public class DatabaseDumpTests
{
    [Test]
    public async Task A_dump_restores_the_pool_as_it_was()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var kept = await client.CreateVmAsync("kept");
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");

        var added = await client.CreateVmAsync("added after the dump");
        await client.InvokeAsync("VM.set_name_label", kept, "renamed after the dump");
        var token = (await client.FromAsync(["VM"], "", 0)).Token;

        using var upload = new ByteArrayContent(dump);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", upload);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), await response.Content.ReadAsStringAsync());

        var events = await client.FromAsync(["VM"], token, 5);
        Assert.Multiple(async () =>
        {
            Assert.That(await client.InvokeAsync("VM.get_name_label", kept), Is.EqualTo("kept"));
            await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.get_record", added), "HANDLE_INVALID");
            Assert.That(events.Events.Where(e => (string)e["ref"]! == added).Select(e => e["operation"]), Does.Contain("del"), "clients learn of the restore through events");
            Assert.That(await client.InvokeAsync("pool.get_all"), Has.Count.EqualTo(1), "the session survives: sessions are not part of the dump");
        });
    }

    [Test]
    public async Task A_damaged_dump_is_refused_and_nothing_changes()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");
        dump[dump.Length / 2] ^= 0x20;
        var vms = await client.InvokeAsync("VM.get_all");
        using var upload = new ByteArrayContent(dump);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", upload);
        using var garbage = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", new StringContent("<database/>"));
        Assert.Multiple(async () =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
            Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain("corrupt").And.Contain("refusing to restore"));
            Assert.That(garbage.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
            Assert.That(await client.InvokeAsync("VM.get_all"), Is.EquivalentTo((IEnumerable<object?>)vms!));
        });
    }

    [Test]
    public async Task A_dump_sent_chunked_restores_like_one_with_a_length_and_leaves_no_file_behind()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");
        var added = await client.CreateVmAsync("added after the dump");

        using var upload = new ChunkedContent(dump);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", upload);
        Assert.Multiple(async () =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), await response.Content.ReadAsStringAsync());
            Assert.That(response.RequestMessage!.Headers.TransferEncodingChunked, Is.True);
            await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.get_record", added), "HANDLE_INVALID");
            Assert.That(Directory.GetFiles(daemon.Host.Options.DataDir, "*.spool"), Is.Empty);
        });
    }

    [Test]
    public async Task A_dump_taken_after_a_destroy_left_references_behind_restores_with_them_cleared()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var vm = await client.CreateVmAsync("destroyed before the dump");
        // A snapshot keeps pointing at the VM it was taken of after that VM is destroyed, as on real hosts.
        var snapshot = await client.CreateVmAsync("snapshot of it");
        daemon.Database.Write(tx => tx.Update(new VMRef(snapshot), v =>
        {
            v.IsASnapshot = true;
            v.SnapshotOf = new VMRef(vm);
        }));
        await daemon.SettledAsync();
        await client.InvokeAsync("VM.destroy", vm);
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");

        using var upload = new ByteArrayContent(dump);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", upload);
        Assert.Multiple(async () =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), await response.Content.ReadAsStringAsync());
            Assert.That(await client.InvokeAsync("VM.get_snapshot_of", snapshot), Is.EqualTo(XType.NullRef));
        });
    }

    [Test]
    public async Task A_dry_run_checks_a_dump_and_changes_nothing()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");
        var added = await client.CreateVmAsync("added after the dump");

        using var upload = new ByteArrayContent(dump);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}&dry_run=true", upload);
        Assert.Multiple(async () =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain("nothing changed (dry run)"));
            Assert.That(await client.InvokeAsync("VM.get_name_label", added), Is.EqualTo("added after the dump"));
        });
    }

    [Test]
    public async Task A_second_restore_while_one_is_uploading_is_refused_as_busy()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        var dump = await http.GetByteArrayAsync($"/pool/xmldbdump?session_id={client.Session}");

        // The first upload sends half its dump and holds the rest back.
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(daemon.Uri.Host, daemon.Uri.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"PUT /pool/xmldbdump?session_id={client.Session} HTTP/1.1\r\nHost: {daemon.Uri.Authority}\r\nTransfer-Encoding: chunked\r\n\r\n"));
        async Task SendChunkAsync(ReadOnlyMemory<byte> data)
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"{data.Length:x}\r\n"));
            await stream.WriteAsync(data);
            await stream.WriteAsync("\r\n"u8.ToArray());
        }
        await SendChunkAsync(dump.AsMemory(0, dump.Length / 2));

        // Until the first holds the restore, a second would be read (and refused as garbage).
        HttpStatusCode second;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        do
        {
            using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", new StringContent("not a dump"));
            second = response.StatusCode;
        }
        while (second != HttpStatusCode.ServiceUnavailable && DateTime.UtcNow < deadline);

        await SendChunkAsync(dump.AsMemory(dump.Length / 2));
        await stream.WriteAsync("0\r\n\r\n"u8.ToArray());
        var reply = new byte[1024];
        var read = await stream.ReadAsync(reply);
        Assert.Multiple(() =>
        {
            Assert.That(second, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
            Assert.That(Encoding.ASCII.GetString(reply, 0, read), Does.StartWith("HTTP/1.1 200"), "the first restore completes");
        });
    }

    /// <summary>A body without a length, so HttpClient sends it chunked.</summary>
    private sealed class ChunkedContent(byte[] data) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            for (var at = 0; at < data.Length; at += 10_000)
            {
                await stream.WriteAsync(data.AsMemory(at, Math.Min(10_000, data.Length - at)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    [Test]
    public async Task Dumps_need_a_pool_admin_session_or_credentials()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var http = new HttpClient { BaseAddress = daemon.Uri };
        using var anonymous = await http.GetAsync("/pool/xmldbdump");
        using var bogus = await http.GetAsync("/pool/xmldbdump?session_id=OpaqueRef:bogus");
        using var basic = new HttpRequestMessage(HttpMethod.Get, "/pool/xmldbdump");
        basic.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"root:{TestDaemon.Password}")));
        using var withCredentials = await http.SendAsync(basic);
        Assert.Multiple(async () =>
        {
            Assert.That(anonymous.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(bogus.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(withCredentials.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(JournalStore.ReadSnapshot(await withCredentials.Content.ReadAsByteArrayAsync(), "dump").Rows, Is.Not.Empty);
        });
    }

    [Test]
    public async Task Sync_database_writes_a_snapshot_that_a_restart_loads()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-sync-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        string vm;
        await using (var daemon = await TestDaemon.StartAsync(o => o.DataDir = dataDir))
        {
            using var client = await daemon.LoginAsync();
            vm = await client.CreateVmAsync("synced");
            await client.InvokeAsync("pool.sync_database");
            Assert.Multiple(() =>
            {
                Assert.That(File.Exists(Path.Combine(dataDir, "db", JournalStore.SnapshotFile)), Is.True);
                Assert.That(daemon.Host.Journal!.JournalBytes, Is.Zero, "the journal starts again after the snapshot");
            });
        }
        await using var restarted = await TestDaemon.StartAsync(o => o.DataDir = dataDir);
        using var again = await restarted.LoginAsync();
        Assert.Multiple(async () =>
        {
            Assert.That(await again.InvokeAsync("VM.get_name_label", vm), Is.EqualTo("synced"));
            Assert.That(restarted.Host.Journal!.LoadReport.SnapshotRows, Is.GreaterThan(0));
        });
    }
}
