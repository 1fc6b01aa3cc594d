using System.Buffers.Binary;
using System.Net;
using System.Text;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>
/// Restoring a dump that is intact (its checksum is right) but not a database this daemon can
/// serve: each is refused with an HTTP 4xx and a one-line reason, and the pool is as it was.
/// </summary>
public class DatabaseDumpValidationTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    private TestDaemon _daemon = null!;
    private XenApiClient _client = null!;
    private HttpClient _http = null!;
    private string _vm = null!;

    [SetUp]
    public async Task StartAsync()
    {
        _daemon = await TestDaemon.StartAsync();
        _client = await _daemon.LoginAsync();
        _http = new HttpClient { BaseAddress = _daemon.Uri };
        _vm = await _client.CreateVmAsync("kept");
    }

    [TearDown]
    public async Task StopAsync()
    {
        _http.Dispose();
        _client.Dispose();
        await _daemon.DisposeAsync();
    }

    private Task<byte[]> DumpAsync(XenApiClient? client = null, HttpClient? http = null) =>
        (http ?? _http).GetByteArrayAsync($"/pool/xmldbdump?session_id={(client ?? _client).Session}");

    private async Task<(HttpStatusCode Status, string Reason)> RestoreAsync(byte[] dump)
    {
        using var upload = new ByteArrayContent(dump);
        using var response = await _http.PutAsync($"/pool/xmldbdump?session_id={_client.Session}", upload);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private async Task<byte[]> TamperedAsync(Action<DatabaseDump> tamper)
    {
        var dump = JournalStore.ReadSnapshot(await DumpAsync(), "dump");
        tamper(dump);
        return JournalStore.EncodeDump(dump).WrittenSpan.ToArray();
    }

    // What a client sees of the pool: compared before and after a refused restore.
    private async Task<object?[]> StateAsync() =>
    [
        await _client.InvokeAsync("VM.get_all_records"),
        await _client.InvokeAsync("host.get_all_records"),
        await _client.InvokeAsync("pool.get_all_records"),
        await _client.InvokeAsync("network.get_all_records"),
    ];

    private async Task AssertRefusedAsync(byte[] dump, HttpStatusCode status, string reason)
    {
        var before = await StateAsync();
        var (actualStatus, actualReason) = await RestoreAsync(dump);
        var after = await StateAsync();
        Assert.Multiple(() =>
        {
            Assert.That(actualStatus, Is.EqualTo(status), actualReason);
            Assert.That(actualReason, Does.Contain(reason).And.Contain("refusing to restore"));
            Assert.That(actualReason.TrimEnd('\n'), Does.Not.Contain('\n'), "the reason is one line");
            Assert.That(after, Is.EqualTo(before), "nothing changed");
        });
        Assert.That(await _client.InvokeAsync("VM.get_name_label", _vm), Is.EqualTo("kept"), "the daemon still serves");
    }

    private DatabaseDump.DumpRow VmRow(DatabaseDump dump) => dump.Rows.Single(r => r.Class == Vm && r.Ref == _vm);

    [Test]
    public async Task A_value_nested_400000_deep_is_refused_and_the_daemon_keeps_serving()
    {
        const string marker = "nested-value-goes-here";
        await _client.InvokeAsync("VM.set_name_label", _vm, marker);
        var dump = await DumpAsync();
        await _client.InvokeAsync("VM.set_name_label", _vm, "kept");

        // The encoder will not write such a value, so it is spliced in where the marker string
        // was: 400,000 one-element sets around a null, with the checksum made right again.
        var encodedMarker = new byte[] { 1, (byte)marker.Length }.Concat(Encoding.UTF8.GetBytes(marker)).ToArray();
        var at = dump.AsSpan().IndexOf(encodedMarker);
        Assert.That(at, Is.GreaterThan(0));
        var deep = Enumerable.Repeat(new byte[] { 7, 1 }, 400_000).SelectMany(b => b).Append((byte)0).ToArray();
        var spliced = dump[..at].Concat(deep).Concat(dump[(at + encodedMarker.Length)..^4]).ToList();
        spliced.AddRange(new byte[4]);
        var bytes = spliced.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(bytes.Length - 4), Crc32C.Compute(bytes.AsSpan(0, bytes.Length - 4)));

        await AssertRefusedAsync(bytes, HttpStatusCode.BadRequest, $"nested deeper than {BinaryCodec.MaxDepth}");
    }

    [Test]
    public async Task A_field_holding_a_value_of_the_wrong_type_is_refused()
    {
        var dump = await TamperedAsync(d => VmRow(d).Values[Vm.FieldsByName["memory_target"].Ordinal] = "lots");
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, $"VM {_vm} field memory_target holds a string where the datamodel has int");
    }

    [Test]
    public async Task An_enum_field_holding_a_name_outside_its_enum_is_refused()
    {
        var dump = await TamperedAsync(d => VmRow(d).Values[Vm.FieldsByName["power_state"].Ordinal] = "Exploded");
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, "not a value of enum vm_power_state");
    }

    [Test]
    public async Task A_reference_to_an_object_not_in_the_dump_is_refused()
    {
        var dangling = "OpaqueRef:" + Guid.NewGuid();
        var dump = await TamperedAsync(d => VmRow(d).Values[Vm.FieldsByName["affinity"].Ordinal] = dangling);
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, $"field affinity names {dangling}, which is not a host in the dump");
    }

    [Test]
    public async Task A_reference_inside_a_set_to_an_object_of_another_class_is_refused()
    {
        var dump = await TamperedAsync(d => VmRow(d).Values[Vm.FieldsByName["attached_PCIs"].Ordinal] = new object?[] { _vm });
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, "field attached_PCIs names");
    }

    [Test]
    public async Task A_one_row_dump_is_refused_rather_than_wiping_the_pool()
    {
        var dump = await TamperedAsync(d => d.Rows.RemoveAll(r => r.Ref != _vm));
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, "");
    }

    [Test]
    public async Task A_dump_without_a_pool_is_refused()
    {
        var dump = await TamperedAsync(d => d.Rows.RemoveAll(r => r.Class == PoolRef.Class));
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, "it holds 0 pool objects");
    }

    [Test]
    public async Task Another_daemons_dump_is_refused_because_it_does_not_hold_this_host()
    {
        await using var other = await TestDaemon.StartAsync();
        using var otherClient = await other.LoginAsync();
        using var otherHttp = new HttpClient { BaseAddress = other.Uri };
        var foreign = await DumpAsync(otherClient, otherHttp);
        var thisHost = (string)(await _client.InvokeAsync("session.get_this_host", _client.Session))!;

        await AssertRefusedAsync(foreign, HttpStatusCode.Conflict, $"the dump does not contain this host ({thisHost})");
        Assert.That(await _client.InvokeAsync("host.get_record", thisHost), Is.Not.Null, "session.get_this_host still names a host");
    }

    [Test]
    public async Task A_reference_that_appears_twice_is_refused()
    {
        var dump = await TamperedAsync(d =>
        {
            var copy = (object?[])VmRow(d).Values.Clone();
            copy[Vm.UuidField!.Ordinal] = Guid.NewGuid().ToString();
            d.Rows.Add(VmRow(d) with { Values = copy });
        });
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, $"the reference {_vm} appears twice");
    }

    [Test]
    public async Task A_uuid_that_appears_twice_in_a_class_is_refused()
    {
        var dump = await TamperedAsync(d =>
        {
            var row = VmRow(d);
            d.Rows.Add(row with { Ref = "OpaqueRef:" + Guid.NewGuid(), Values = (object?[])row.Values.Clone() });
        });
        await AssertRefusedAsync(dump, HttpStatusCode.BadRequest, "uuid");
    }

    [Test]
    public async Task A_dump_larger_than_the_limit_is_refused_from_its_length_before_it_is_read()
    {
        await using var small = await TestDaemon.StartAsync(o => o.MaxDumpBytes = 1 << 20);
        using var client = await small.LoginAsync();
        using var http = new HttpClient { BaseAddress = small.Uri };
        var vms = await client.InvokeAsync("VM.get_all_records");
        using var upload = new ByteArrayContent(new byte[2 << 20]);
        using var response = await http.PutAsync($"/pool/xmldbdump?session_id={client.Session}", upload);
        Assert.Multiple(async () =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
            Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain($"larger than the limit of {1 << 20} bytes"));
            Assert.That(await client.InvokeAsync("VM.get_all_records"), Is.EqualTo(vms));
        });
    }

    [Test]
    public async Task Values_are_restored_in_canonical_form()
    {
        var dump = await TamperedAsync(d =>
        {
            VmRow(d).Values[Vm.FieldsByName["VCPUs_max"].Ordinal] = 3; // an int, not a long
            VmRow(d).Values[Vm.FieldsByName["power_state"].Ordinal] = "HALTED";
        });
        var (status, reason) = await RestoreAsync(dump);
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK), reason);
        Assert.Multiple(async () =>
        {
            Assert.That(XType.Parse("int").Coerce(await _client.InvokeAsync("VM.get_VCPUs_max", _vm), "VCPUs_max"), Is.EqualTo(3L));
            Assert.That(await _client.InvokeAsync("VM.get_power_state", _vm), Is.EqualTo("Halted"));
        });
    }
}
