using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Formats.Vhd;

/// <summary>The parent a differencing export names: the base VDI's VHD identity (its footer uuid, file mtime and name).</summary>
public sealed record VhdParent(Guid UniqueId, DateTimeOffset Timestamp, string FileName);

public sealed record VhdExportOptions
{
    /// <summary>
    /// Null for a dynamic VHD (disk type 3) that stands alone: blocks left out read as zeros. Set for a
    /// differencing VHD (disk type 4, what the real server writes for <c>base=</c>): blocks left out read
    /// from this parent, and every included block carries its full data.
    /// </summary>
    public VhdParent? Parent { get; init; }

    /// <summary>The footer's unique id; a fresh one when null.</summary>
    public Guid? UniqueId { get; init; }

    /// <summary>The footer's creation time; now when null.</summary>
    public DateTimeOffset? Timestamp { get; init; }

    /// <summary>Always 2 MiB outside tests, which use small blocks to keep fuzz inputs small.</summary>
    internal int BlockSize { get; init; } = VhdFormat.DefaultBlockSize;
}

/// <summary>
/// A sparse VHD export of one disk, planned before the first byte is sent so that its exact length is
/// known (for Content-Length) and then written strictly sequentially to a stream in bounded memory
/// (two blocks in flight: the next block is read from the disk while the previous one is written).
/// Layout as vhd-tool writes it: footer copy, dynamic header, one locator sector, the BAT at 2048,
/// then the included blocks in ascending order each with its sector bitmap, then the footer.
/// </summary>
public sealed class VhdExport
{
    /// <summary>How much of a block the zero check reads at first: most data blocks fail it at once.</summary>
    private const int FirstProbe = 4096;
    private const int MaxProbe = 1 << 20;

    private readonly IDiskImage _image;
    private readonly VhdExportOptions _options;
    private readonly int[] _included;
    private readonly long _tableOffset;
    private readonly long _tableBytes;
    private readonly int _bitmapSize;
    private readonly int _blockCount;
    private readonly byte[] _locator;
    private readonly Guid _uniqueId;
    private readonly uint _timestamp;

    private VhdExport(IDiskImage image, VhdExportOptions options, int[] included, int blockCount, byte[] locator)
    {
        _image = image;
        _options = options;
        _included = included;
        _blockCount = blockCount;
        _locator = locator;
        _uniqueId = options.UniqueId ?? Guid.NewGuid();
        _timestamp = VhdFormat.Timestamp(options.Timestamp ?? DateTimeOffset.UtcNow);
        _bitmapSize = VhdFormat.BitmapSize(options.BlockSize);
        // vhd-tool leaves one sector for the parent locator even in dynamic exports; keep its layout.
        _tableOffset = VhdFormat.FooterSize + VhdFormat.HeaderSize + Math.Max(VhdFormat.SectorSize, VhdFormat.RoundUp(locator.Length, VhdFormat.SectorSize));
        _tableBytes = VhdFormat.RoundUp(blockCount * 4L, VhdFormat.SectorSize);
        Length = _tableOffset + _tableBytes + (included.Length * (long)(_bitmapSize + options.BlockSize)) + VhdFormat.FooterSize;
        var lastSector = (_tableOffset + _tableBytes + (Math.Max(0, included.Length - 1) * (long)(_bitmapSize + options.BlockSize))) / VhdFormat.SectorSize;
        if (lastSector >= VhdFormat.Unallocated)
        {
            throw new ArgumentOutOfRangeException(nameof(image), $"a disk of {image.Size} bytes does not fit a VHD's 32-bit block table");
        }
    }

    /// <summary>The exact number of bytes <see cref="WriteToAsync"/> writes.</summary>
    public long Length { get; }

    /// <summary>How many blocks the export carries (the others read as zeros, or from the parent).</summary>
    public int IncludedBlocks => _included.Length;

    public VhdDiskType DiskType => _options.Parent is null ? VhdDiskType.Dynamic : VhdDiskType.Differencing;

    /// <summary>Plans and writes in one go; returns the number of bytes written.</summary>
    public static async Task<long> ExportAsync(IDiskImage image, IAsyncEnumerable<DiskExtent> extents, Stream output, VhdExportOptions? options, Action<long, long>? progress, CancellationToken cancellationToken)
    {
        var export = await PlanAsync(image, extents, options, cancellationToken).ConfigureAwait(false);
        await export.WriteToAsync(output, progress, cancellationToken).ConfigureAwait(false);
        return export.Length;
    }

    /// <summary>
    /// Decides which blocks the export carries. For a dynamic export, <paramref name="extents"/> is the
    /// image's map (or any subset of it): a block is included when a data extent touches it and the data
    /// there is not all zeros (read with an early exit, so a data block costs one 4 KiB read here).
    /// For a differencing export the extents are the ranges changed since the parent, zero or not: a
    /// block touched by any of them is included whole, because a block reset to zeros must override the
    /// parent's data.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The disk is larger than <see cref="VhdFormat.MaxVirtualSize"/> (callers check first), or an extent lies outside it.</exception>
    public static async Task<VhdExport> PlanAsync(IDiskImage image, IAsyncEnumerable<DiskExtent> extents, VhdExportOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(extents);
        options ??= new VhdExportOptions();
        if (image.Size > VhdFormat.MaxVirtualSize)
        {
            throw new ArgumentOutOfRangeException(nameof(image), $"a disk of {image.Size} bytes is larger than the {VhdFormat.MaxVirtualSize} bytes a VHD export allows");
        }
        if (options.BlockSize < VhdFormat.SectorSize || !int.IsPow2(options.BlockSize))
        {
            throw new ArgumentOutOfRangeException(nameof(options), "the block size must be a power of two of at least 512 bytes");
        }
        var locator = Array.Empty<byte>();
        if (options.Parent is { } parent)
        {
            if (!VhdDynamicHeader.ParentNameFits(parent.FileName))
            {
                throw new ArgumentOutOfRangeException(nameof(options), "the parent's file name does not fit the VHD header's 256 characters");
            }
            locator = Encoding.UTF8.GetBytes("file://" + parent.FileName);
        }

        var blockSize = options.BlockSize;
        var blockCount = checked((int)VhdFormat.CeilDiv(image.Size, blockSize));
        var included = new bool[blockCount];
        var differencing = options.Parent is not null;
        var probe = differencing ? null : ArrayPool<byte>.Shared.Rent(MaxProbe);
        try
        {
            await foreach (var extent in extents.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                if (extent.Offset < 0 || extent.Length < 0 || extent.End > image.Size)
                {
                    throw new ArgumentOutOfRangeException(nameof(extents), $"the extent {extent.Offset}+{extent.Length} lies outside the disk of {image.Size} bytes");
                }
                if (extent.Length == 0 || (extent.Zero && !differencing))
                {
                    continue;
                }
                for (var block = extent.Offset / blockSize; block * blockSize < extent.End; block++)
                {
                    if (included[block])
                    {
                        continue;
                    }
                    var start = Math.Max(extent.Offset, block * blockSize);
                    var end = Math.Min(extent.End, (block + 1) * blockSize);
                    included[block] = differencing || await HoldsDataAsync(image, start, end, probe!, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            if (probe is not null)
            {
                ArrayPool<byte>.Shared.Return(probe);
            }
        }
        var list = new List<int>();
        for (var i = 0; i < blockCount; i++)
        {
            if (included[i])
            {
                list.Add(i);
            }
        }
        return new VhdExport(image, options, [.. list], blockCount, locator);
    }

    private static async ValueTask<bool> HoldsDataAsync(IDiskImage image, long start, long end, byte[] probe, CancellationToken cancellationToken)
    {
        var chunk = FirstProbe;
        for (var offset = start; offset < end;)
        {
            var length = (int)Math.Min(chunk, end - offset);
            var buffer = probe.AsMemory(0, length);
            await image.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            if (buffer.Span.ContainsAnyExcept((byte)0))
            {
                return true;
            }
            offset += length;
            chunk = Math.Min(chunk * 16, MaxProbe);
        }
        return false;
    }

    /// <summary>
    /// Writes the VHD to <paramref name="output"/> front to back, never seeking and never flushing;
    /// <paramref name="progress"/> gets (bytes written, <see cref="Length"/>) after each block.
    /// </summary>
    public async Task WriteToAsync(Stream output, Action<long, long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        var blockSize = _options.BlockSize;
        var size = _image.Size;
        var done = 0L;

        var footer = new byte[VhdFormat.FooterSize];
        BuildFooter().Write(footer);
        var head = new byte[_tableOffset];
        footer.CopyTo(head, 0);
        BuildHeader().Write(head.AsSpan(VhdFormat.FooterSize));
        _locator.CopyTo(head, VhdFormat.FooterSize + VhdFormat.HeaderSize);
        await output.WriteAsync(head, cancellationToken).ConfigureAwait(false);
        done += head.Length;

        await WriteTableAsync(output, cancellationToken).ConfigureAwait(false);
        done += _tableBytes;
        progress?.Invoke(done, Length);

        var slot = _bitmapSize + blockSize;
        byte[][] buffers = [ArrayPool<byte>.Shared.Rent(slot), ArrayPool<byte>.Shared.Rent(slot)];
        Task? reading = null;
        Task? writing = null;
        try
        {
            if (_included.Length > 0)
            {
                reading = FillBlockAsync(buffers[0], _included[0], size, cancellationToken);
            }
            for (var i = 0; i < _included.Length; i++)
            {
                await reading!.ConfigureAwait(false);
                reading = null;
                if (writing is not null)
                {
                    await writing.ConfigureAwait(false);
                    writing = null;
                    done += slot;
                    progress?.Invoke(done, Length);
                }
                // The disk read of the next block overlaps the network write of this one.
                if (i + 1 < _included.Length)
                {
                    reading = FillBlockAsync(buffers[(i + 1) % 2], _included[i + 1], size, cancellationToken);
                }
                writing = output.WriteAsync(buffers[i % 2].AsMemory(0, slot), cancellationToken).AsTask();
            }
            if (writing is not null)
            {
                await writing.ConfigureAwait(false);
                writing = null;
                done += slot;
            }
        }
        finally
        {
            // A failed read or write may leave the other one running on a buffer: let it finish before the buffers go back.
            await Quietly(reading).ConfigureAwait(false);
            await Quietly(writing).ConfigureAwait(false);
            ArrayPool<byte>.Shared.Return(buffers[0]);
            ArrayPool<byte>.Shared.Return(buffers[1]);
        }

        await output.WriteAsync(footer, cancellationToken).ConfigureAwait(false);
        done += footer.Length;
        progress?.Invoke(done, Length);
    }

    private static async Task Quietly(Task? task)
    {
        if (task is null)
        {
            return;
        }
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Already reported by the await that failed first.
        }
    }

    private async Task FillBlockAsync(byte[] buffer, int block, long size, CancellationToken cancellationToken)
    {
        var blockSize = _options.BlockSize;
        var start = (long)block * blockSize;
        var dataLength = (int)Math.Min(blockSize, size - start);
        // Mark only the sectors inside the disk: vhd-tool's import writes every marked sector, and one
        // past the end of the VDI would fail its write.
        var sectors = (int)VhdFormat.CeilDiv(dataLength, VhdFormat.SectorSize);
        var bitmap = buffer.AsSpan(0, _bitmapSize);
        bitmap.Clear();
        bitmap[..(sectors / 8)].Fill(0xFF);
        if (sectors % 8 != 0)
        {
            bitmap[sectors / 8] = (byte)(0xFF << (8 - (sectors % 8)));
        }
        await _image.ReadAsync(start, buffer.AsMemory(_bitmapSize, dataLength), cancellationToken).ConfigureAwait(false);
        buffer.AsSpan(_bitmapSize + dataLength, blockSize - dataLength).Clear();
    }

    private async Task WriteTableAsync(Stream output, CancellationToken cancellationToken)
    {
        const int chunkEntries = 16384;
        var buffer = ArrayPool<byte>.Shared.Rent(chunkEntries * 4);
        try
        {
            var sector = (_tableOffset + _tableBytes) / VhdFormat.SectorSize;
            var sectorsPerBlock = (_bitmapSize + _options.BlockSize) / VhdFormat.SectorSize;
            var next = 0;
            var entries = (int)(_tableBytes / 4);
            for (var first = 0; first < entries; first += chunkEntries)
            {
                var count = Math.Min(chunkEntries, entries - first);
                for (var i = 0; i < count; i++)
                {
                    var block = first + i;
                    var value = VhdFormat.Unallocated;
                    if (next < _included.Length && _included[next] == block)
                    {
                        value = (uint)sector;
                        sector += sectorsPerBlock;
                        next++;
                    }
                    BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(i * 4), value);
                }
                await output.WriteAsync(buffer.AsMemory(0, count * 4), cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private VhdFooter BuildFooter() => new(
        DiskType,
        _image.Size,
        VhdFormat.FooterSize,
        _uniqueId,
        _timestamp,
        VhdFormat.CreatorApp,
        VhdFormat.Geometry(_image.Size));

    private VhdDynamicHeader BuildHeader()
    {
        var locators = Array.Empty<VhdParentLocator>();
        if (_options.Parent is not null)
        {
            locators =
            [
                new VhdParentLocator(
                    VhdFormat.PlatformMacX,
                    (uint)VhdFormat.CeilDiv(_locator.Length, VhdFormat.SectorSize),
                    (uint)_locator.Length,
                    VhdFormat.FooterSize + VhdFormat.HeaderSize),
            ];
        }
        return new VhdDynamicHeader(
            _tableOffset,
            _blockCount,
            _options.BlockSize,
            _options.Parent?.UniqueId ?? Guid.Empty,
            _options.Parent is { } parent ? VhdFormat.Timestamp(parent.Timestamp) : 0,
            _options.Parent?.FileName ?? string.Empty,
            locators);
    }
}
