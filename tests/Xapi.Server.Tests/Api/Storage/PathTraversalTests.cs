using Xapi.Model;
using static Xapi.Server.Tests.Api.Storage.StorageKit;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>
/// Names, locations, device_config and sm_config values, and links that try to reach outside an
/// SR: refused, or harmless, and the files outside are never read, written or removed.
/// </summary>
public class PathTraversalTests
{
    /// <summary>A directory outside every SR holding a disk image and a plain file that must survive everything.</summary>
    private sealed class Outside : IDisposable
    {
        public Outside()
        {
            Root = Directory.CreateTempSubdirectory("xapi-outside-").FullName;
            Image = Path.Combine(Root, "victim.qcow2");
            Plain = Path.Combine(Root, "victim.iso");
            Directory.CreateDirectory(Path.Combine(Root, "dir"));
            File.WriteAllBytes(Path.Combine(Root, "dir", "keep"), Pattern(4096, 11, (0, 4096)));
            File.WriteAllBytes(Plain, Pattern(MiB, 12, (0, (int)MiB)));
        }

        public string Root { get; }

        public string Image { get; }

        public string Plain { get; }

        public Dictionary<string, string> Before { get; private set; } = [];

        /// <summary>Makes a qcow2 image with data, which a server that followed a link would happily serve.</summary>
        public async Task SealAsync()
        {
            var raw = Path.Combine(Path.GetTempPath(), Guid.NewGuid().ToString("D") + ".raw");
            await File.WriteAllBytesAsync(raw, Pattern(2 * MiB, 13, (0, 8192)));
            await LocalSrTests.RunAsync("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, Image);
            File.Delete(raw);
            Before = Fingerprint(Root);
        }

        public void AssertUntouched() =>
            Assert.That(Fingerprint(Root), Is.EqualTo(Before), "nothing outside the SR was changed or removed");

        public void Dispose() => Directory.Delete(Root, recursive: true);
    }

    private static async Task<int> CountAsync(StorageKit kit, string cls) => ((IReadOnlyList<object?>)(await kit.Client.InvokeAsync($"{cls}.get_all"))!).Count;

    [Test]
    public async Task An_sr_location_with_dot_dot_segments_or_relative_is_refused_and_nothing_is_made()
    {
        await using var kit = await StartAsync();
        var scratch = Directory.CreateTempSubdirectory("xapi-sr-location-").FullName;
        using var cleanup = new DirectoryCleanup(scratch);
        var srs = await CountAsync(kit, "SR");
        var pbds = await CountAsync(kit, "PBD");
        var etc = Directory.EnumerateFileSystemEntries("/etc").Order().ToList();
        var relative = "xapi-relative-" + Guid.NewGuid().ToString("N");

        foreach (var (type, location, code) in new[]
        {
            ("ext", "/tmp/../etc", 1),
            ("ext", $"{scratch}/a/../b", 1),
            ("ext", $"{scratch}/./b", 1),
            ("ext", $"{scratch}//b", 1),
            ("ext", relative, 1),
            ("ext", "", 94),
            ("iso", $"{scratch}/iso/../b", 1),
            ("iso", relative, 225),
        })
        {
            var error = await XenApiAssert.FailsAsync(() => kit.CreateSrAsync(type, new Dictionary<string, object?> { ["location"] = location }), $"SR_BACKEND_FAILURE_{code}");
            Assert.That(string.Join(" ", error.Parameters), Does.Contain("location").IgnoreCase, location);
            // The refusal is answered once its clean-up is durable: the very next read sees no SR.
            Assert.That(await CountAsync(kit, "SR"), Is.EqualTo(srs), $"no SR record is left behind by {location}");
        }

        Assert.Multiple(async () =>
        {
            Assert.That(await CountAsync(kit, "SR"), Is.EqualTo(srs), "no SR record is left behind");
            Assert.That(await CountAsync(kit, "PBD"), Is.EqualTo(pbds));
            Assert.That(Directory.EnumerateFileSystemEntries(scratch), Is.Empty);
            Assert.That(Directory.Exists(relative), Is.False);
            Assert.That(Directory.EnumerateFileSystemEntries("/etc").Order().ToList(), Is.EqualTo(etc));
        });
    }

    [Test]
    public async Task Sm_config_values_with_dot_dot_on_vdi_create_do_not_reach_file_names()
    {
        await using var kit = await StartAsync();
        using var outside = new Outside();
        await outside.SealAsync();
        var sr = await kit.DefaultSrAsync();
        var directory = await kit.ExtDirectoryAsync(sr);
        var before = Fingerprint(directory).Keys.ToHashSet();
        var escape = Path.GetRelativePath(directory, outside.Image);
        var vdi = await kit.CreateVdiAsync(sr, 2 * MiB, "../../../etc/passwd", new Dictionary<string, object?>
        {
            ["vhd-parent"] = escape,
            ["base_mirror"] = "../" + escape,
            ["key_hash"] = outside.Image,
            ["path"] = "../../x",
        });
        var uuid = (string)(await kit.Client.InvokeAsync("VDI.get_uuid", vdi))!;
        var smConfig = (IReadOnlyDictionary<string, object?>)(await kit.RecordAsync("VDI", vdi))["sm_config"]!;

        Assert.Multiple(async () =>
        {
            Assert.That(Fingerprint(directory).Keys.Except(before), Is.EquivalentTo(new[] { uuid + ".qcow2" }), "the only new file is named after the VDI's uuid");
            Assert.That(smConfig.ContainsKey("vhd-parent"), Is.False, "a client cannot name a parent");
            Assert.That(Sha256(await kit.ExportBytesAsync(vdi)), Is.EqualTo(Sha256(new byte[2 * MiB])), "the disk is empty, not the image outside");
        });
        await kit.Client.InvokeAsync("VDI.destroy", vdi);
        await kit.SettledUtilisationAsync(sr);
        outside.AssertUntouched();
    }

    [Test]
    public async Task A_vdi_record_introduced_with_a_location_outside_its_sr_reads_nothing_and_deletes_nothing_there()
    {
        await using var kit = await StartAsync();
        using var outside = new Outside();
        await outside.SealAsync();
        var ext = await kit.DefaultSrAsync();
        var iso = await kit.SrOfTypeAsync("iso");
        var extDirectory = await kit.ExtDirectoryAsync(ext);

        // The ext driver does not introduce VDIs; records made by db_introduce only.
        await XenApiAssert.FailsAsync(() => kit.Client.InvokeAsync("VDI.introduce", "", "x", "", ext, "user", false, false,
            new Dictionary<string, object?>(), "../x", new Dictionary<string, object?>(), new Dictionary<string, object?>(), true, "0", "0",
            "OpaqueRef:NULL", false, new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc), "OpaqueRef:NULL"), "SR_OPERATION_NOT_SUPPORTED", ext);

        var introduced = new List<string>();
        foreach (var (sr, location) in new[]
        {
            (ext, Path.GetRelativePath(extDirectory, outside.Image)),
            (ext, outside.Image),
            (iso, "../" + Path.GetFileName(outside.Root) + "/victim.iso"),
            (iso, outside.Plain),
            (iso, ".."),
        })
        {
            introduced.Add((string)(await kit.Client.InvokeAsync("VDI.db_introduce", Guid.NewGuid().ToString("D"), "evil", "", sr, "user", false, false,
                new Dictionary<string, object?>(), location, new Dictionary<string, object?>(), new Dictionary<string, object?>(), true, "2097152", "0",
                "OpaqueRef:NULL", false, new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc), "OpaqueRef:NULL"))!);
        }

        foreach (var vdi in introduced)
        {
            var export = await kit.ExportAsync(vdi);
            Assert.That(export.TaskStatus, Is.EqualTo("failure"), $"{vdi} is not served");
            Assert.That(export.Body, Has.Length.LessThan(512), "no byte of the image outside is sent");
            try
            {
                await kit.Client.InvokeAsync("VDI.destroy", vdi);
            }
            catch (XenApiException e)
            {
                Assert.That(e.Code, Does.StartWith("SR_BACKEND_FAILURE"), e.Message);
            }
        }
        outside.AssertUntouched();
    }

    [Test]
    public async Task Links_planted_in_sr_directories_are_never_served_and_survive_scan_collection_and_sr_destroy_with_their_targets()
    {
        await using var kit = await StartAsync();
        using var outside = new Outside();
        await outside.SealAsync();
        var location = Directory.CreateTempSubdirectory("xapi-linked-sr-").FullName;
        using var cleanup = new DirectoryCleanup(location);
        var sr = await kit.CreateSrAsync("ext", new Dictionary<string, object?> { ["location"] = location });
        var directory = await kit.ExtDirectoryAsync(sr, location);
        var vdi = await kit.CreateVdiAsync(sr, 2 * MiB);
        var uuid = (string)(await kit.Client.InvokeAsync("VDI.get_uuid", vdi))!;

        // A link under a VDI's own name (its image swapped for the outside one), a new one, one to a directory, a link as hidden marker.
        File.Delete(Path.Combine(directory, uuid + ".qcow2"));
        File.CreateSymbolicLink(Path.Combine(directory, uuid + ".qcow2"), outside.Image);
        var planted = Guid.NewGuid().ToString("D");
        File.CreateSymbolicLink(Path.Combine(directory, planted + ".qcow2"), outside.Image);
        File.CreateSymbolicLink(Path.Combine(directory, planted + ".hidden"), outside.Plain);
        Directory.CreateSymbolicLink(Path.Combine(directory, Guid.NewGuid().ToString("D")), Path.Combine(outside.Root, "dir"));
        File.CreateSymbolicLink(Path.Combine(kit.Daemon.Host.Options.DataDir, "iso", "linked.iso"), outside.Plain);

        var export = await kit.ExportAsync(vdi);
        Assert.That(export.TaskStatus, Is.EqualTo("failure"), "an image that became a link is not read");
        Assert.That(export.Body, Has.Length.LessThan(512));

        await kit.SettledUtilisationAsync(sr);
        var iso = await kit.SrOfTypeAsync("iso");
        await kit.Client.InvokeAsync("SR.scan", iso);
        Assert.Multiple(async () =>
        {
            Assert.That(await kit.VdisOfAsync(sr), Is.Empty, "no link is taken for a disk");
            Assert.That(await kit.VdisOfAsync(iso), Is.Empty, "no link is taken for an ISO");
        });

        var pbd = (string)((IReadOnlyList<object?>)(await kit.RecordAsync("SR", sr))["PBDs"]!)[0]!;
        await kit.Client.InvokeAsync("PBD.unplug", pbd);
        await kit.Client.InvokeAsync("SR.destroy", sr);
        Assert.That(Directory.Exists(directory), Is.False, "the SR's directory is gone");
        outside.AssertUntouched();
    }
}
