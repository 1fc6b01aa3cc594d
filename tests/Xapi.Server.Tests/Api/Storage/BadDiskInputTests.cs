using System.Buffers.Binary;
using System.Net;
using static Xapi.Server.Tests.Api.Storage.StorageKit;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>
/// Disk bytes that are wrong (too many, a damaged VHD, a read-only target): each refused with the
/// error a client can act on, the disk and its SR as they were, no space taken.
/// </summary>
public class BadDiskInputTests
{
    private const long Size = 8 * MiB;

    private static readonly byte[] Data = Pattern(Size, 8, (0, 512), (3 * MiB + 1, 4000), (Size - 4096, 4096));

    private static async Task<(StorageKit Kit, string Sr, string Vdi, byte[] Vhd)> PrepareAsync()
    {
        var kit = await StartAsync();
        var sr = await kit.DefaultSrAsync();
        var vdi = await kit.CreateVdiAsync(sr, Size);
        await kit.ImportOkAsync(vdi, Data);
        return (kit, sr, vdi, await kit.ExportBytesAsync(vdi, "vhd"));
    }

    /// <summary>Imports into a disk holding other data and checks the refusal left it, and its SR, as they were.</summary>
    private static async Task<Transfer> RefusedAsync(StorageKit kit, string sr, byte[] body, string format, long? contentLength = null)
    {
        var target = await kit.CreateVdiAsync(sr, Size, "target");
        var before = Pattern(Size, 9, (MiB, 100));
        await kit.ImportOkAsync(target, before);
        var directory = await kit.ExtDirectoryAsync(sr);
        var files = Fingerprint(directory);
        var used = await kit.SettledUtilisationAsync(sr);

        var import = await kit.ImportAsync(target, body, format, contentLength: contentLength);

        Assert.Multiple(async () =>
        {
            Assert.That(import.TaskStatus, Is.EqualTo("failure"));
            Assert.That(Sha256(await kit.ExportBytesAsync(target)), Is.EqualTo(Sha256(before)), "the disk is as it was");
            Assert.That(Fingerprint(directory), Is.EqualTo(files), "no image of the SR changed and none appeared");
            Assert.That(await kit.SettledUtilisationAsync(sr), Is.EqualTo(used), "no space is taken");
        });
        return import;
    }

    [Test]
    public async Task A_raw_body_longer_than_the_disk_is_refused_with_400_and_vdi_too_small_before_a_byte_is_written()
    {
        var (kit, sr, _, _) = await PrepareAsync();
        await using var _1 = kit;
        var import = await RefusedAsync(kit, sr, Pattern(Size + MiB, 10, (0, (int)(Size + MiB))), "raw");
        Assert.That(import.Status, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That(import.ErrorInfo[0], Is.EqualTo("VDI_TOO_SMALL"));
        Assert.That(import.ErrorInfo[2], Is.EqualTo(Number(Size + MiB)));
    }

    [Test]
    public async Task A_vhd_larger_than_the_disk_is_refused_with_vdi_too_small()
    {
        var (kit, sr, _, _) = await PrepareAsync();
        await using var _1 = kit;
        var big = await kit.CreateVdiAsync(sr, 2 * Size, "big");
        var import = await RefusedAsync(kit, sr, await kit.ExportBytesAsync(big, "vhd"), "vhd");
        Assert.That(import.ErrorInfo[0], Is.EqualTo("VDI_TOO_SMALL"));
    }

    [Test]
    public async Task A_truncated_vhd_is_refused_with_vdi_io_error_and_a_reason()
    {
        var (kit, sr, _, vhd) = await PrepareAsync();
        await using var _1 = kit;
        var import = await RefusedAsync(kit, sr, vhd.AsSpan(0, vhd.Length / 2).ToArray(), "vhd");
        Assert.That(import.ErrorInfo.Take(2), Is.EqualTo(new[] { "VDI_IO_ERROR", "Device I/O errors" }));
        Assert.That(import.ErrorInfo, Has.Count.GreaterThan(2), "the reason says what was wrong");
    }

    [Test]
    public async Task A_vhd_whose_footer_checksum_is_wrong_is_refused_with_vdi_io_error_and_a_reason()
    {
        var (kit, sr, _, vhd) = await PrepareAsync();
        await using var _1 = kit;
        var corrupt = vhd.ToArray();
        corrupt[40] ^= 0x01; // the footer's original size: any change breaks its checksum
        var import = await RefusedAsync(kit, sr, corrupt, "vhd");
        Assert.That(import.ErrorInfo.Take(2), Is.EqualTo(new[] { "VDI_IO_ERROR", "Device I/O errors" }));
        Assert.That(string.Join(" ", import.ErrorInfo.Skip(2)), Does.Contain("checksum").IgnoreCase);
    }

    /// <summary>
    /// Without its cookie the start is no footer, as with a fixed VHD (whose footer comes only at
    /// the end), but the dynamic disk header behind it gives the stream away: it is refused before
    /// its first sector is written, so the disk keeps what it had.
    /// </summary>
    [Test]
    public async Task A_vhd_whose_footer_cookie_is_damaged_fails_with_vdi_io_error_and_a_reason_and_the_disk_keeps_its_data()
    {
        var (kit, sr, _, vhd) = await PrepareAsync();
        await using var _1 = kit;
        var corrupt = vhd.ToArray();
        corrupt[0] = (byte)'X';
        var import = await RefusedAsync(kit, sr, corrupt, "vhd");
        Assert.That(import.ErrorInfo.Take(2), Is.EqualTo(new[] { "VDI_IO_ERROR", "Device I/O errors" }));
        Assert.That(string.Join(" ", import.ErrorInfo.Skip(2)), Does.Contain("footer copy").And.Contain("damaged"));
    }

    [Test]
    public async Task A_vhd_whose_block_table_points_past_its_end_is_refused_with_vdi_io_error_and_a_reason()
    {
        var (kit, sr, _, vhd) = await PrepareAsync();
        await using var _1 = kit;
        var corrupt = vhd.ToArray();
        var header = (int)BinaryPrimitives.ReadUInt64BigEndian(corrupt.AsSpan(16));
        var table = (int)BinaryPrimitives.ReadUInt64BigEndian(corrupt.AsSpan(header + 16));
        var entries = (int)BinaryPrimitives.ReadUInt32BigEndian(corrupt.AsSpan(header + 28));
        var used = Enumerable.Range(0, entries).First(i => BinaryPrimitives.ReadUInt32BigEndian(corrupt.AsSpan(table + 4 * i)) != uint.MaxValue);
        BinaryPrimitives.WriteUInt32BigEndian(corrupt.AsSpan(table + 4 * used), (uint)(corrupt.Length / 512 + 1000));
        var import = await RefusedAsync(kit, sr, corrupt, "vhd");
        Assert.That(import.ErrorInfo.Take(2), Is.EqualTo(new[] { "VDI_IO_ERROR", "Device I/O errors" }));
        Assert.That(import.ErrorInfo, Has.Count.GreaterThan(2));
    }

    [Test]
    public async Task An_import_into_a_snapshot_is_refused_with_vdi_readonly_and_the_snapshot_keeps_its_data()
    {
        var (kit, sr, vdi, _) = await PrepareAsync();
        await using var _1 = kit;
        var snapshot = (string)(await kit.Client.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()))!;
        var directory = await kit.ExtDirectoryAsync(sr);
        var files = Fingerprint(directory);
        var import = await kit.ImportAsync(snapshot, new byte[MiB]);
        Assert.Multiple(async () =>
        {
            Assert.That(import.Status, Is.Not.EqualTo(HttpStatusCode.OK));
            Assert.That(import.ErrorInfo, Is.EqualTo(new[] { "VDI_READONLY", snapshot }));
            Assert.That(Sha256(await kit.ExportBytesAsync(snapshot)), Is.EqualTo(Sha256(Data)));
            Assert.That(Fingerprint(directory), Is.EqualTo(files));
        });
    }
}
