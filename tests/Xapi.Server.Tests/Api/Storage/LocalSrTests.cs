using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>The local ext SR first boot makes, driven over the wire as a client would.</summary>
public class LocalSrTests
{
    private static async Task<string> DefaultSrAsync(XenApiClient client)
    {
        var pools = (IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!;
        return (string)(await client.InvokeAsync("pool.get_default_SR", pools[0]))!;
    }

    private static async Task<string> CreateVdiAsync(XenApiClient client, string sr, long size, string name = "disk")
    {
        var record = new Dictionary<string, object?>
        {
            ["name_label"] = name,
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = size.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
        };
        return (string)(await client.InvokeAsync("VDI.create", record))!;
    }

    private static async Task<IReadOnlyDictionary<string, object?>> RecordAsync(XenApiClient client, string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync($"{cls}.get_record", reference))!;

    [Test]
    public async Task First_boot_makes_a_plugged_local_sr_that_is_the_pool_default()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var sr = await DefaultSrAsync(client);
        var record = await RecordAsync(client, "SR", sr);
        var pbds = (IReadOnlyList<object?>)record["PBDs"]!;
        Assert.Multiple(async () =>
        {
            Assert.That(record["type"], Is.EqualTo("ext"));
            Assert.That(record["name_label"], Is.EqualTo("Local storage"));
            Assert.That(long.Parse((string)record["physical_size"]!), Is.GreaterThan(0));
            Assert.That(pbds, Has.Count.EqualTo(1));
            Assert.That((await RecordAsync(client, "PBD", (string)pbds[0]!))["currently_attached"], Is.True);
            var types = (IReadOnlyList<object?>)(await client.InvokeAsync("SR.get_supported_types"))!;
            Assert.That(types, Is.SupersetOf(new[] { "ext", "iso", "dummy", "udev" }));
        });
    }

    [Test]
    public async Task A_vdi_is_created_snapshotted_cloned_resized_and_destroyed_with_true_sizes()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var sr = await DefaultSrAsync(client);
        var vdi = await CreateVdiAsync(client, sr, 10L << 20);
        var created = await RecordAsync(client, "VDI", vdi);
        Assert.That(created["virtual_size"], Is.EqualTo((10L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That((IEnumerable<object?>)created["allowed_operations"]!,
            Is.EquivalentTo(new[] { "clone", "copy", "resize", "snapshot", "destroy", "forget", "update", "generate_config" }), "as real hosts allow on an idle VDI of an ext SR");
        var srOperations = (IEnumerable<object?>)(await RecordAsync(client, "SR", sr))["allowed_operations"]!;
        Assert.That(srOperations, Does.Contain("vdi_create").And.Contain("vdi_snapshot").And.Not.Contain("destroy").And.Not.Contain("forget"),
            "a plugged SR with disks can make disks but cannot be destroyed or forgotten");
        Assert.That(long.Parse((string)(await RecordAsync(client, "SR", sr))["virtual_allocation"]!), Is.EqualTo(10L << 20));

        var snapshot = (string)(await client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        var snapshotRecord = await RecordAsync(client, "VDI", snapshot);
        Assert.Multiple(() =>
        {
            Assert.That(snapshotRecord["is_a_snapshot"], Is.True);
            Assert.That(snapshotRecord["snapshot_of"], Is.EqualTo(vdi));
            Assert.That(snapshotRecord["read_only"], Is.True);
        });
        var clone = (string)(await client.InvokeAsync("VDI.clone", snapshot, new Dictionary<string, object?>()))!;
        Assert.That((await RecordAsync(client, "VDI", clone))["read_only"], Is.False);

        await client.InvokeAsync("VDI.resize", vdi, (20L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.That((await RecordAsync(client, "VDI", vdi))["virtual_size"], Is.EqualTo((20L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VDI.resize", vdi, (4L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)),
            "SR_BACKEND_FAILURE_79", "", "VDI Invalid size", "shrinking not allowed");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VDI.resize_online", vdi, (40L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)),
            "SR_OPERATION_NOT_SUPPORTED", sr);

        foreach (var each in new[] { clone, snapshot, vdi })
        {
            await client.InvokeAsync("VDI.destroy", each);
        }
        await client.InvokeAsync("SR.scan", sr);
        var left = (IReadOnlyList<object?>)(await RecordAsync(client, "SR", sr))["VDIs"]!;
        Assert.That(left, Is.Empty, "the hidden bases are collected once nothing uses them");
    }

    [Test]
    public async Task A_scan_finds_an_image_added_behind_the_daemons_back_and_forgets_one_removed()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var sr = await DefaultSrAsync(client);
        var srUuid = (string)(await client.InvokeAsync("SR.get_uuid", sr))!;
        var directory = Path.Combine(daemon.Host.Options.DataDir, "sr", srUuid);
        var added = Guid.NewGuid().ToString("D");
        await RunAsync("qemu-img", "create", "-q", "-f", "qcow2", Path.Combine(directory, added + ".qcow2"), "8M");
        var removed = await CreateVdiAsync(client, sr, 4L << 20);
        var removedUuid = (string)(await client.InvokeAsync("VDI.get_uuid", removed))!;
        File.Delete(Path.Combine(directory, removedUuid + ".qcow2"));
        // A link planted in the SR pointing outside is never taken for a disk.
        File.CreateSymbolicLink(Path.Combine(directory, Guid.NewGuid().ToString("D") + ".qcow2"), "/etc/passwd");

        await client.InvokeAsync("SR.scan", sr);

        var uuids = new List<string>();
        foreach (var vdi in (IReadOnlyList<object?>)(await RecordAsync(client, "SR", sr))["VDIs"]!)
        {
            uuids.Add((string)(await client.InvokeAsync("VDI.get_uuid", vdi))!);
        }
        Assert.That(uuids, Is.EquivalentTo(new[] { added }));
    }

    [Test]
    public async Task Destroying_an_sr_with_disks_or_plugged_is_refused_with_the_real_errors()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var sr = await DefaultSrAsync(client);
        await CreateVdiAsync(client, sr, 4L << 20);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("SR.destroy", sr), "SR_HAS_PBD", sr);
        var pbd = (string)((IReadOnlyList<object?>)(await RecordAsync(client, "SR", sr))["PBDs"]!)[0]!;
        await client.InvokeAsync("PBD.unplug", pbd);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("SR.destroy", sr), "SR_NOT_EMPTY");
        await XenApiAssert.FailsAsync(() => CreateVdiAsync(client, sr, 1L << 20), "SR_HAS_NO_PBDS", sr);
        await client.InvokeAsync("PBD.plug", pbd);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("PBD.destroy", pbd), "OPERATION_NOT_ALLOWED", "PBD is currently attached");
    }

    [Test]
    public async Task A_suspend_image_is_written_and_read_back_through_the_same_driver()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var host = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!)[0]!;
        var sr = (string)(await client.InvokeAsync("host.get_suspend_image_sr", host))!;
        var record = new Dictionary<string, object?>
        {
            ["name_label"] = "Suspend image", ["name_description"] = "", ["SR"] = sr, ["virtual_size"] = (3L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["type"] = "suspend", ["sharable"] = false, ["read_only"] = false, ["other_config"] = new Dictionary<string, object?>(),
        };
        var vdi = (string)(await client.InvokeAsync("VDI.create", record))!;
        Assert.That(await client.InvokeAsync("VDI.get_type", vdi), Is.EqualTo("suspend"));
        var image = new byte[3 << 20];
        new Random(11).NextBytes(image);
        using var http = new HttpClient();
        var reply = await http.PutAsync(new Uri(daemon.Uri, $"/import_raw_vdi?session_id={client.Session}&vdi={vdi}"), new ByteArrayContent(image));
        Assert.That(await client.InvokeAsync("task.get_status", reply.Headers.GetValues("task-id").Single()), Is.EqualTo("success"));
        var back = await http.GetByteArrayAsync(new Uri(daemon.Uri, $"/export_raw_vdi?session_id={client.Session}&vdi={vdi}"));
        Assert.That(back.AsSpan(0, image.Length).SequenceEqual(image), Is.True);
    }

    [Test]
    public async Task A_data_dir_with_a_long_path_still_serves_disk_data()
    {
        var deep = Path.Combine(Directory.CreateTempSubdirectory("xapi-long-").FullName, new string('d', 60), new string('e', 60));
        await using var daemon = await TestDaemon.StartAsync(options =>
        {
            options.DataDir = deep;
            options.UnixSocket = "";
        });
        using var client = await daemon.LoginAsync();
        var vdi = await CreateVdiAsync(client, await DefaultSrAsync(client), 2L << 20);
        using var http = new HttpClient();
        var exported = await http.GetByteArrayAsync(new Uri(daemon.Uri, $"/export_raw_vdi?session_id={client.Session}&vdi={vdi}"));
        Assert.That(exported, Has.Length.EqualTo(2 << 20), "qemu-nbd's socket fits although the data dir is long");
    }

    internal static async Task RunAsync(string file, params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.That(process.ExitCode, Is.Zero, error);
    }
}
