using System.Text.Json;
using Microsoft.Extensions.Logging;
using Xapi.Storage.DataPath;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

/// <summary>
/// The local file SR: thin-provisioned qcow2 images in a directory (<c>&lt;location&gt;/&lt;sr-uuid&gt;</c>),
/// snapshots and clones as copy-on-write chains, a garbage collector that coalesces chains.
/// Snapshots take SM's shape: the source's data becomes a hidden read-only base, and the
/// source and the new VDI are both empty overlays on it, so every visible VDI is a leaf.
/// Every file operation goes through an <see cref="ISrFileStore"/>, so the same chain driver
/// also runs over an NFS export (<see cref="Nfs.NfsDriver"/>).
/// </summary>
public partial class ExtDriver : SrDriver
{
    /// <summary>device_config key: the directory SRs of this type are made in.</summary>
    public const string LocationKey = "location";

    /// <summary>VHD's limit, kept so every VDI can be exported as VHD.</summary>
    public const long MaxVirtualSize = 2040L << 30;

    /// <summary>Sizes round up to the VHD block, as SM does.</summary>
    public const long SizeGranularity = 2L << 20;

    /// <summary>Deeper chains are refused (SM's limit), so reads never walk very long chains.</summary>
    public const int MaxChainDepth = 30;

    private const string HiddenMarker = ".hidden";
    private const string MetadataFile = ".sr.json";

    public override SmDescription Description { get; } = new(
        "ext", "Local EXT3 VHD", "SR plugin which represents disks as qcow2 files stored on a local path", "xapi-dotnet", "1.0",
        [
            new(SmFeatures.SrProbe), new(SmFeatures.SrSupportsLocalCaching), new(SmFeatures.SrUpdate), new(SmFeatures.ThinProvisioning),
            new(SmFeatures.VdiActivate), new(SmFeatures.VdiAttach), new(SmFeatures.VdiClone), new(SmFeatures.VdiCreate),
            new(SmFeatures.VdiDeactivate), new(SmFeatures.VdiDelete), new(SmFeatures.VdiDetach), new(SmFeatures.VdiGenerateConfig),
            new(SmFeatures.VdiMirror), new(SmFeatures.VdiResize), new(SmFeatures.VdiSnapshot), new(SmFeatures.VdiUpdate),
        ],
        [new(LocationKey, "local directory path (required) (e.g. /var/lib/xapi/sr)")]);

    public static SrDirectory DirectoryOf(SrContext sr) =>
        new(Path.Combine(SrDirectory.CheckClientDirectory(sr.Config(LocationKey), LocationKey), sr.Uuid));

    /// <summary>The SR's directory, checked; every operation opens it once and disposes it at the end.</summary>
    protected virtual ISrFileStore StoreOf(SrContext sr) =>
        new LocalSrFileStore(SrDirectory.CheckClientDirectory(sr.Config(LocationKey), LocationKey), DirectoryOf(sr));

    public override ValueTask<IReadOnlyDictionary<string, string>?> CreateAsync(SrContext sr, long physicalSize, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CreateRoot();
        directory.CreateDirectory(directory.JournalDirectory);
        directory.WriteDurably(directory.PathIn(directory.Root, MetadataFile), JsonSerializer.Serialize(new SrMetadata(physicalSize > 0 ? physicalSize : null)));
        return ValueTask.FromResult<IReadOnlyDictionary<string, string>?>(null);
    }

    public override async ValueTask DeleteAsync(SrContext sr, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        if (!directory.Exists(directory.Root))
        {
            return;
        }
        directory.CheckRoot();
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        if (chain.Nodes.Values.Any(n => !n.Hidden))
        {
            throw new SmException(SmErrors.SrNotEmpty, "The SR is not empty");
        }
        directory.DeleteRoot();
    }

    public override async ValueTask AttachAsync(SrContext sr, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        directory.CreateDirectory(directory.JournalDirectory);
        await RecoverAsync(sr, directory, cancellationToken).ConfigureAwait(false);
    }

    public override ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken)
    {
        var location = SrDirectory.CheckClientDirectory(probe.DeviceConfig.GetValueOrDefault(LocationKey), LocationKey);
        var xml = new System.Text.StringBuilder("<?xml version=\"1.0\" ?>\n<SRlist>\n");
        if (Directory.Exists(location))
        {
            foreach (var entry in new DirectoryInfo(location).EnumerateDirectories().Where(d => d.LinkTarget is null && SrDirectory.IsUuid(d.Name)).OrderBy(d => d.Name, StringComparer.Ordinal))
            {
                xml.Append("\t<SR>\n\t\t<UUID>").Append(entry.Name).Append("</UUID>\n\t</SR>\n");
            }
        }
        xml.Append("</SRlist>\n");
        return ValueTask.FromResult(xml.ToString());
    }

    public override async ValueTask<SrScan> ScanAsync(SrContext sr, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        return new SrScan(chain.Nodes.Values.Select(n => n.Info).ToList(), Stat(directory));
    }

    public override ValueTask<SrStat> StatAsync(SrContext sr, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        return ValueTask.FromResult(Stat(directory));
    }

    /// <summary>
    /// The SR's size is its quota (SR.create's physical_size) or else its filesystem's; what it
    /// uses is what its own files occupy on disk.
    /// </summary>
    private static SrStat Stat(ISrFileStore directory)
    {
        var used = directory.UsedBytes();
        var (fsSize, _) = directory.Space();
        var quota = ReadMetadata(directory).Quota;
        return new SrStat(quota ?? fsSize, used);
    }

    /// <summary>Bytes the SR can still take: within its quota and what the filesystem has free.</summary>
    public static long Available(ISrFileStore directory)
    {
        var stat = Stat(directory);
        var (_, fsAvailable) = directory.Space();
        return Math.Max(0, Math.Min(stat.PhysicalSize - stat.PhysicalUtilisation, fsAvailable));
    }

    private static SrMetadata ReadMetadata(ISrFileStore directory)
    {
        var path = directory.PathIn(directory.Root, MetadataFile);
        return directory.IsRegularFile(path) ? JsonSerializer.Deserialize<SrMetadata>(directory.ReadText(path)) ?? new SrMetadata(null) : new SrMetadata(null);
    }

    private sealed record SrMetadata(long? Quota);

    public static long CheckedSize(long requested)
    {
        if (requested < 0 || requested > MaxVirtualSize)
        {
            throw new SmException(SmErrors.VdiSize, "VDI Invalid size", $"VDI size must be between 1 MB and {MaxVirtualSize >> 20} MB");
        }
        return Math.Max(SizeGranularity, (requested + SizeGranularity - 1) / SizeGranularity * SizeGranularity);
    }

    public override async ValueTask<VdiInfo> CreateVdiAsync(SrContext sr, VdiSpec spec, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var size = CheckedSize(spec.VirtualSize);
        var path = directory.PathOf(spec.Uuid, QemuImg.Extension);
        if (directory.Exists(path))
        {
            throw new SmException(SmErrors.VdiExists, "The VDI already exists", spec.Uuid);
        }
        var temporary = path + ".tmp";
        directory.Delete(temporary);
        try
        {
            await QemuImg.CreateAsync(directory.ImageOf(temporary), size, cancellationToken).ConfigureAwait(false);
            directory.Move(temporary, path);
        }
        catch
        {
            // Cancelled or failed: what qemu-img left would hold space until the next attach.
            directory.Delete(temporary);
            throw;
        }
        directory.SyncDirectory();
        return await InfoAsync(directory, spec.Uuid, cancellationToken).ConfigureAwait(false) with { ReadOnly = spec.ReadOnly, Type = spec.Type };
    }

    public override async ValueTask DeleteVdiAsync(SrContext sr, VdiInfo vdi, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        if (!chain.Nodes.TryGetValue(vdi.Uuid, out var node))
        {
            return;
        }
        if (chain.ChildrenOf(vdi.Uuid).Count > 0)
        {
            // Other images read through this one: it becomes garbage for the collector instead.
            MarkHidden(directory, vdi.Uuid);
            return;
        }
        directory.Delete(node.Path);
        directory.Delete(directory.PathOf(vdi.Uuid, HiddenMarker));
        directory.SyncDirectory();
    }

    public override async ValueTask<VdiInfo> ResizeVdiAsync(SrContext sr, VdiInfo vdi, long newSize, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var current = await InfoAsync(directory, vdi.Uuid, cancellationToken).ConfigureAwait(false);
        if (current.Hidden)
        {
            throw new SmException(SmErrors.VdiUnavailable, "The VDI is not available", "a hidden chain node cannot be resized");
        }
        var size = CheckedSize(newSize);
        if (size < current.VirtualSize)
        {
            throw new SmException(SmErrors.VdiSize, "VDI Invalid size", "shrinking not allowed");
        }
        if (size == current.VirtualSize)
        {
            return current;
        }
        await QemuImg.ResizeAsync(directory.ImageOf(directory.PathOf(vdi.Uuid, QemuImg.Extension)), size, cancellationToken).ConfigureAwait(false);
        return await InfoAsync(directory, vdi.Uuid, cancellationToken).ConfigureAwait(false);
    }

    public override ValueTask<VdiAttachment> AttachVdiAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        var path = directory.PathOf(vdi.Uuid, QemuImg.Extension);
        if (!directory.IsRegularFile(path))
        {
            throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        }
        return ValueTask.FromResult(new VdiAttachment(directory.ImageOf(path), QemuImg.Format, !writable));
    }

    public override async ValueTask<IDiskImage> OpenAsync(SrContext sr, VdiInfo vdi, bool writable, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        // The whole chain is checked before qemu opens it, so no backing name leads outside the SR.
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        if (!chain.Nodes.TryGetValue(vdi.Uuid, out var node))
        {
            throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        }
        if (!writable && await OpenMappedAsync(directory, chain, node, cancellationToken).ConfigureAwait(false) is { } mapped)
        {
            return mapped;
        }
        Directory.CreateDirectory(sr.RuntimeDirectory);
        // Writing may grow the image by what the SR has left, plus what the image holds already (rewritten in place).
        var budget = writable ? Available(directory) + node.Info.PhysicalUtilisation : 0;
        var image = await QemuNbdImage.OpenAsync(directory.ImageOf(node.Path), QemuImg.Format, writable, sr.RuntimeDirectory, cancellationToken).ConfigureAwait(false);
        return writable ? new SpaceLimitedImage(image, budget) : image;
    }

    /// <summary>
    /// The chain read straight from its files through qemu-img's map, when every data run is
    /// stored plainly in a local file; null (qemu-nbd reads it instead) for compressed clusters
    /// or a store without local files.
    /// </summary>
    private static async Task<MappedImage?> OpenMappedAsync(ISrFileStore directory, Chain chain, Node node, CancellationToken cancellationToken)
    {
        var ancestry = chain.Ancestry(node.Uuid);
        var layers = new List<Microsoft.Win32.SafeHandles.SafeFileHandle>();
        try
        {
            // Opened before the map is taken: a collector step that removes a node afterwards leaves our handle reading what the map says.
            foreach (var uuid in ancestry)
            {
                if (directory.OpenForReading(chain.Nodes[uuid].Path) is not { } layer)
                {
                    return null;
                }
                layers.Add(layer);
            }
            var map = await QemuImg.MapAsync(directory.ImageOf(node.Path), cancellationToken).ConfigureAwait(false);
            var runs = new List<MappedImage.Run>(map.Count);
            foreach (var entry in map)
            {
                if (!entry.Present || entry.Zero)
                {
                    runs.Add(new MappedImage.Run(entry.Start, entry.Length, MappedImage.Zeros, 0));
                }
                else if (entry.Data && entry.Offset is { } offset && entry.Depth < layers.Count)
                {
                    runs.Add(new MappedImage.Run(entry.Start, entry.Length, entry.Depth, offset));
                }
                else
                {
                    return null;
                }
            }
            if (runs.Sum(r => r.Length) != node.Info.VirtualSize)
            {
                return null;
            }
            var image = MappedImage.Create(node.Info.VirtualSize, layers, runs);
            layers.Clear();
            return image;
        }
        finally
        {
            foreach (var layer in layers)
            {
                layer.Dispose();
            }
        }
    }

    public override async ValueTask<IReadOnlyList<DiskExtent>?> ChangedExtentsAsync(SrContext sr, VdiInfo vdi, VdiInfo baseVdi, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        var ours = chain.Ancestry(vdi.Uuid);
        var theirs = chain.Ancestry(baseVdi.Uuid);
        var common = ours.FirstOrDefault(theirs.Contains);
        if (common is null)
        {
            return null;
        }
        var changed = new List<DiskExtent>();
        changed.AddRange(await AboveAsync(directory, chain, vdi.Uuid, ours.IndexOf(common), cancellationToken).ConfigureAwait(false));
        changed.AddRange(await AboveAsync(directory, chain, baseVdi.Uuid, theirs.IndexOf(common), cancellationToken).ConfigureAwait(false));
        var size = chain.Nodes[vdi.Uuid].Info.VirtualSize;
        return Merge(changed, size);
    }

    /// <summary>The extents the top <paramref name="depth"/> layers above a node hold.</summary>
    private static async Task<IEnumerable<DiskExtent>> AboveAsync(ISrFileStore directory, Chain chain, string uuid, int depth, CancellationToken cancellationToken)
    {
        var map = await QemuImg.MapAsync(directory.ImageOf(chain.Nodes[uuid].Path), cancellationToken).ConfigureAwait(false);
        return map.Where(e => e.Present && e.Depth < depth).Select(e => new DiskExtent(e.Start, e.Length, Zero: false));
    }

    private static List<DiskExtent> Merge(List<DiskExtent> extents, long size)
    {
        var merged = new List<DiskExtent>();
        foreach (var extent in extents.Where(e => e.Offset < size).OrderBy(e => e.Offset))
        {
            var clipped = extent with { Length = Math.Min(extent.Length, size - extent.Offset) };
            if (merged.Count > 0 && merged[^1].End >= clipped.Offset)
            {
                var last = merged[^1];
                merged[^1] = last with { Length = Math.Max(last.End, clipped.End) - last.Offset };
            }
            else
            {
                merged.Add(clipped);
            }
        }
        return merged;
    }

    private static async Task<VdiInfo> InfoAsync(ISrFileStore directory, string uuid, CancellationToken cancellationToken)
    {
        var chain = await Chain.ReadAsync(directory, null, cancellationToken).ConfigureAwait(false);
        return chain.Nodes.TryGetValue(uuid, out var node)
            ? node.Info
            : throw new SmException(SmErrors.VdiMissing, "The VDI is not available", uuid);
    }

    private static void MarkHidden(ISrFileStore directory, string uuid)
    {
        directory.WriteDurably(directory.PathOf(uuid, HiddenMarker), "");
    }
}
