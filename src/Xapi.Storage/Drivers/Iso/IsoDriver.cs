using Xapi.Storage.DataPath;

namespace Xapi.Storage.Drivers.Iso;

/// <summary>
/// A directory of ISO images (SM's ISOSR in legacy mode, <c>location</c> a local directory):
/// each <c>*.iso</c> or <c>*.img</c> regular file is a read-only VDI whose location is its
/// file name. Links, directories and other names are ignored, so nothing outside is served.
/// </summary>
public sealed class IsoDriver : SrDriver
{
    public const string LocationKey = "location";
    public const string LegacyModeKey = "legacy_mode";

    public override SmDescription Description { get; } = new(
        "iso", "ISO", "Handles CD images stored as files in iso format", "xapi-dotnet", "1.0",
        [
            new(SmFeatures.SrAttach), new(SmFeatures.SrDetach), new(SmFeatures.SrScan),
            new(SmFeatures.VdiAttach), new(SmFeatures.VdiCreate), new(SmFeatures.VdiDelete), new(SmFeatures.VdiDetach),
        ],
        [new(LocationKey, "path to mount (required) (e.g. server:/path)"), new(LegacyModeKey, "the location is a local directory")]);

    private static string Root(SrContext sr)
    {
        var location = sr.Config(LocationKey);
        if (location is not null && !location.StartsWith('/'))
        {
            throw new SmException(SmErrors.IsoLocationStringError, "Incorrect Location string format. String must be in the format SERVER:PATH for NFS targets, or \\\\SERVER\\PATH for CIFS targets", location);
        }
        return SrDirectory.CheckClientDirectory(location, LocationKey);
    }

    public override ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Root(sr));
        return ValueTask.FromResult<IReadOnlyDictionary<string, string>?>(null);
    }

    public override ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public override ValueTask AttachAsync(SrContext sr, CancellationToken cancellationToken)
    {
        new SrDirectory(Root(sr)).CheckRoot();
        return ValueTask.CompletedTask;
    }

    public override ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken)
    {
        var root = Root(sr);
        new SrDirectory(root).CheckRoot();
        var vdis = Images(root).Select(file => Describe(file)).ToList();
        var (size, available) = SrDirectory.FileSystemSpace(root);
        return ValueTask.FromResult(new SrScan(vdis, new SrStat(size, size - available)));
    }

    private static IEnumerable<FileInfo> Images(string root) =>
        new DirectoryInfo(root).EnumerateFiles()
            .Where(f => IsImageName(f.Name) && f.LinkTarget is null && (f.Attributes & FileAttributes.ReparsePoint) == 0)
            .OrderBy(f => f.Name, StringComparer.Ordinal);

    private static bool IsImageName(string name) =>
        (name.EndsWith(".iso", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".img", StringComparison.OrdinalIgnoreCase))
        && !name.Contains('/') && !name.Any(char.IsControl) && name is not ("." or "..");

    private static VdiInfo Describe(FileInfo file)
    {
        var stem = Path.GetFileNameWithoutExtension(file.Name);
        return new VdiInfo
        {
            // An image named after a uuid keeps it; the others get one derived from the name, stable across scans.
            Uuid = SrDirectory.IsUuid(stem) ? stem : StableUuid(file.Name),
            Location = file.Name,
            NameLabel = file.Name,
            VirtualSize = file.Length,
            PhysicalUtilisation = file.Length,
            ReadOnly = true,
        };
    }

    private static string StableUuid(string name)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes("iso/" + name));
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash.AsSpan(0, 16), bigEndian: true).ToString("D");
    }

    private static string ImagePath(SrContext sr, VdiInfo vdi)
    {
        var root = Root(sr);
        if (!IsImageName(vdi.Location))
        {
            throw SmException.InvalidArgument($"not an ISO image name: {vdi.Location}");
        }
        var path = Path.Combine(root, vdi.Location);
        if (!SrDirectory.IsRegularFile(path))
        {
            throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Location);
        }
        return path;
    }

    public override ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken)
    {
        var root = Root(sr);
        var name = spec.Uuid + ".img";
        var path = Path.Combine(root, name);
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength(spec.VirtualSize);
        }
        return ValueTask.FromResult(Describe(new FileInfo(path)) with { ReadOnly = false, NameLabel = spec.NameLabel });
    }

    public override ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken)
    {
        File.Delete(ImagePath(sr, vdi));
        return ValueTask.CompletedTask;
    }

    public override ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new VdiAttachment(ImagePath(sr, vdi), "raw", ReadOnly: true));

    public override ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IDiskImage>(RawFileImage.Open(ImagePath(sr, vdi), writable && !vdi.ReadOnly));
}
