using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.Drivers.Ext;
using Xapi.Storage.Drivers.Nfs;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Tests.Nfs;

/// <summary>
/// The nfs driver against a real nfs-ganesha over NFSv3 (libnfs for files, qemu-img on nfs://
/// URLs for images), with the chain scenarios of the ext driver and the NFS-only behaviour.
/// Budget: the whole fixture in 60 s (it takes about 15 s on an idle two-core machine).
/// </summary>
[Category("Nfs")]
[Explicit("needs the NFS sandbox: scripts/nfs-sandbox.sh <scratch> -- dotnet test ... --filter TestCategory=Nfs")]
public sealed class NfsDriverTests : ChainDriverScenarios
{
    private static readonly Dictionary<string, string> Config = new()
    {
        [NfsLocation.ServerKey] = NfsSandbox.Server,
        [NfsLocation.ServerPathKey] = NfsSandbox.ServerPath,
    };

    protected override ExtDriver Driver { get; } = new NfsDriver();

    protected override IReadOnlyDictionary<string, string> DeviceConfig => Config;

    protected override string BackDoor(string srUuid) => Path.Combine(NfsSandbox.Directory, srUuid);

    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(60);
    private readonly System.Diagnostics.Stopwatch _elapsed = new();

    [OneTimeSetUp]
    public void RequireServer()
    {
        NfsSandbox.Require();
        _elapsed.Start();
    }

    [OneTimeTearDown]
    public void CheckBudget() => Assert.That(_elapsed.Elapsed, Is.LessThan(Budget), "the NFS driver tests' budget");

    [Test]
    public async Task Probe_without_serverpath_fails_with_the_server_s_export_list_and_with_it_lists_the_SRs_there()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        System.IO.Directory.CreateDirectory(Path.Combine(NfsSandbox.Directory, "not-an-sr"));

        var withoutPath = new ProbeContext(new Dictionary<string, string> { [NfsLocation.ServerKey] = NfsSandbox.Server }, new Dictionary<string, string>(), NullLogger.Instance);
        var error = await Assert.ThrowsAsync<SmException>(async () => await Driver.ProbeAsync(withoutPath, default));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.ConfigServerPathMissing));
        Assert.That(error.Detail, Does.Contain("<Target>127.0.0.1</Target>").And.Contain("<Path>/export</Path>"));

        var xml = await Driver.ProbeAsync(new ProbeContext(Config, new Dictionary<string, string>(), NullLogger.Instance), default);
        var uuids = System.Xml.Linq.XDocument.Parse(xml).Descendants("UUID").Select(e => e.Value).ToList();
        Assert.That(uuids, Does.Contain(sr.Uuid).And.None.EqualTo("not-an-sr"));
    }

    [Test]
    public async Task The_images_of_an_NFS_SR_are_qcow2_files_in_serverpath_slash_sr_uuid_chained_by_absolute_nfs_URLs()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(4 * MiB), default);
        var inode = await InodeAsync(Path.Combine(NfsSandbox.Directory, sr.Uuid, vdi.Uuid + ".qcow2"));
        var snapshot = await Driver.SnapshotVdiAsync(sr, vdi, Guid.NewGuid().ToString("D"), default);

        var attachment = await Driver.AttachVdiAsync(sr, vdi, writable: true, default);
        Assert.That(attachment.Path, Is.EqualTo($"nfs://127.0.0.1/export/{sr.Uuid}/{vdi.Uuid}.qcow2"));
        Assert.That(File.Exists(Path.Combine(NfsSandbox.Directory, sr.Uuid, vdi.Uuid + ".qcow2")));
        var info = await QemuImg.InfoAsync(attachment.Path, default);
        Assert.That(info.BackingFile, Is.EqualTo($"nfs://127.0.0.1/export/{sr.Uuid}/{snapshot.NewBase!.Uuid}.qcow2"));
        // Linked over NFSv3 (LINK), not copied: the base is the source's old file under its second name.
        Assert.That(await InodeAsync(Path.Combine(NfsSandbox.Directory, sr.Uuid, snapshot.NewBase.Uuid + ".qcow2")), Is.EqualTo(inode));
    }

    private static async Task<string> InodeAsync(string path)
    {
        var start = new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true };
        using var process = System.Diagnostics.Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.That(process.ExitCode, Is.Zero, path);
        return output.Trim();
    }

    [Test]
    public async Task An_image_whose_backing_URL_leads_to_another_SR_or_climbs_out_of_this_one_is_not_part_of_the_SR()
    {
        var sr = NewSr();
        var other = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        await Driver.CreateAsync(other, 0, default);
        var elsewhere = await Driver.CreateVdiAsync(other, Spec(2 * MiB), default);
        var directory = BackDoor(sr.Uuid);
        foreach (var backing in new[]
        {
            $"nfs://127.0.0.1/export/{other.Uuid}/{elsewhere.Uuid}.qcow2",
            $"nfs://127.0.0.1/export/{sr.Uuid}/../{other.Uuid}/{elsewhere.Uuid}.qcow2",
            $"nfs://127.0.0.2/export/{other.Uuid}/{elsewhere.Uuid}.qcow2",
        })
        {
            await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2", Path.Combine(directory, Guid.NewGuid().ToString("D") + ".qcow2"), "2097152"], default);
        }

        var scan = await Driver.ScanAsync(sr, default);

        Assert.That(scan.Vdis, Is.Empty);
    }

    [Test]
    public async Task Attaching_an_SR_that_was_never_created_fails_SR_unavailable_and_a_path_the_server_does_not_export_fails_to_mount()
    {
        var missing = await Assert.ThrowsAsync<SmException>(async () => await Driver.AttachAsync(NewSr(), default));
        Assert.That(missing!.Code, Is.EqualTo(SmErrors.SrUnavailable));

        var elsewhere = new SrContext(Guid.NewGuid().ToString("D"),
            new Dictionary<string, string> { [NfsLocation.ServerKey] = NfsSandbox.Server, [NfsLocation.ServerPathKey] = "/not-exported" },
            new Dictionary<string, string>(), Scratch(), NullLogger.Instance);
        var unmounted = await Assert.ThrowsAsync<SmException>(async () => await Driver.CreateAsync(elsewhere, 0, default));
        Assert.That(unmounted!.Code, Is.EqualTo(NfsErrors.NfsMount));
        Assert.That(unmounted.Detail, Does.Contain("/not-exported"));
    }

    [Test]
    public async Task The_SR_s_size_is_the_exported_filesystem_s_and_its_use_is_what_its_files_occupy()
    {
        var sr = NewSr();
        await Driver.CreateAsync(sr, 0, default);
        var vdi = await Driver.CreateVdiAsync(sr, Spec(8 * MiB), default);
        var empty = await Driver.StatAsync(sr, default);
        await WriteAsync(sr, vdi, System.Security.Cryptography.RandomNumberGenerator.GetBytes((int)(8 * MiB)));
        var full = await Driver.StatAsync(sr, default);

        var drive = new DriveInfo(NfsSandbox.Directory);
        Assert.That(full.PhysicalSize, Is.EqualTo(drive.TotalSize));
        Assert.That(full.PhysicalUtilisation - empty.PhysicalUtilisation, Is.InRange(8 * MiB, 9 * MiB));
    }
}
