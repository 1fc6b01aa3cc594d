using System.Buffers;
using System.Buffers.Binary;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Formats.Vhd;

public sealed record VhdImportOptions
{
    /// <summary>
    /// True (the default): after a dynamic or fixed VHD is imported the disk reads exactly as the VHD
    /// does, so blocks the VHD leaves out and sectors its bitmaps leave unmarked become zeros. Only
    /// ranges the disk's map shows holding data are zeroed, so on a fresh thin disk this costs map
    /// queries, no writes. The real server instead writes only what the VHD allocates and leaves the
    /// rest of an existing VDI as it was; false gives that overlay behaviour. A differencing VHD is
    /// always applied as an overlay: what it leaves out belongs to its parent.
    /// </summary>
    public bool ZeroUnallocated { get; init; } = true;
}

/// <summary>What was imported: the VHD's identity for the caller to log or check (a differencing VHD's parent).</summary>
public sealed record VhdImportResult(VhdDiskType DiskType, long VirtualSize, Guid UniqueId, Guid? ParentUniqueId, int AllocatedBlocks, long BytesRead);

/// <summary>
/// Applies a VHD read front to back from a stream (an HTTP request body) to a writable disk, in
/// bounded memory: the block allocation table (at most 8 MiB) and two 2 MiB chunks, the next read
/// from the stream while the previous one is written to the disk.
/// <para>
/// Everything about the layout is checked before the first byte reaches the disk: both checksums,
/// the header's consistency with the footer, the virtual size against the disk's, and every table
/// entry (inside the disk's blocks, behind the table, not overlapping another block, and, when the
/// length is known, not past the trailing footer). Faults only a full read can find (a stream that
/// ends early, a corrupt trailing footer) are reported after the blocks before them were written;
/// nothing is ever written past the VHD's virtual size, which is at most the disk's size.
/// </para>
/// <para>
/// A fixed VHD has no footer at its start, so a stream that does not start with a valid footer copy
/// is taken for one: it is written as data while its last 512 bytes are held back, and the footer
/// they hold is checked at the end. With a known length, a fixed VHD too large for the disk is
/// refused before anything is written. A start without a footer cookie followed by a dynamic disk
/// header (<c>cxsparse</c> at byte 512) is a dynamic VHD with a damaged footer copy, and is refused
/// before anything is written: a fixed disk whose data held a VHD header there would be a disk
/// whose data is a VHD file, which a valid footer copy at its start already makes ambiguous.
/// </para>
/// </summary>
public static class VhdImport
{
    /// <summary>The largest chunk of a block handled at once: blocks larger than this stream through in pieces.</summary>
    private const int ChunkSize = 2 * 1024 * 1024;
    private const int WritesInFlight = 4;

    /// <exception cref="VhdFormatException">The stream is not a well-formed VHD, or ends early.</exception>
    /// <exception cref="VhdTooLargeException">The VHD's virtual size is larger than <paramref name="target"/>.</exception>
    public static async Task<VhdImportResult> ImportAsync(Stream input, long? contentLength, IDiskImage target, VhdImportOptions? options, Action<long, long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (!target.Writable)
        {
            throw new ArgumentException("the disk to import into is read-only", nameof(target));
        }
        if (contentLength is < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(contentLength));
        }
        using var reader = new ForwardReader(input, contentLength, progress);
        var first = new byte[VhdFormat.FooterSize];
        await reader.ReadExactlyAsync(first, "the footer copy at the start", cancellationToken).ConfigureAwait(false);
        var importer = new Importer(reader, target, options ?? new VhdImportOptions(), cancellationToken);
        if (VhdFooter.HasCookie(first))
        {
            var footer = VhdFooter.Parse(first, "the footer copy at the start of the VHD");
            if (footer.DiskType != VhdDiskType.Fixed)
            {
                return await importer.ImportSparseAsync(footer).ConfigureAwait(false);
            }
            return await importer.ImportFixedAsync(first, ReadOnlyMemory<byte>.Empty).ConfigureAwait(false);
        }
        // No footer copy: a fixed VHD, or a dynamic one whose copy is damaged. Its header says
        // which, and must be seen before the first sector is written as data.
        var second = new byte[VhdFormat.HeaderCookie.Length];
        var read = await reader.ReadUpToAsync(second, cancellationToken).ConfigureAwait(false);
        if (read == second.Length && second.AsSpan().SequenceEqual(VhdFormat.HeaderCookie))
        {
            throw new VhdFormatException("the footer copy at the start of the VHD is damaged (no \"conectix\" cookie), but a dynamic disk header (\"cxsparse\") follows it");
        }
        return await importer.ImportFixedAsync(first, second.AsMemory(0, read)).ConfigureAwait(false);
    }

    private sealed class Importer(ForwardReader reader, IDiskImage target, VhdImportOptions options, CancellationToken cancellationToken)
    {
        public async Task<VhdImportResult> ImportSparseAsync(VhdFooter footer)
        {
            var size = footer.CurrentSize;
            if (size > target.Size)
            {
                throw new VhdTooLargeException(size, target.Size);
            }
            var footerAt = reader.Length - VhdFormat.FooterSize;
            var headerLimit = (footerAt ?? long.MaxValue) - VhdFormat.HeaderSize;
            if (footer.DataOffset < VhdFormat.FooterSize || footer.DataOffset > (ulong)Math.Max(headerLimit, 0))
            {
                throw new VhdFormatException($"the footer puts the dynamic disk header at byte {footer.DataOffset}, outside the VHD");
            }
            var headerAt = (long)footer.DataOffset;
            await reader.SkipToAsync(headerAt, "the dynamic disk header", cancellationToken).ConfigureAwait(false);
            var headerBytes = new byte[VhdFormat.HeaderSize];
            await reader.ReadExactlyAsync(headerBytes, "the dynamic disk header", cancellationToken).ConfigureAwait(false);
            var header = VhdDynamicHeader.Parse(headerBytes);

            var blockSize = header.BlockSize;
            var blocks = VhdFormat.CeilDiv(size, blockSize);
            if (header.MaxTableEntries < blocks)
            {
                throw new VhdFormatException($"the block allocation table has {header.MaxTableEntries} entries, too few for a disk of {size} bytes in blocks of {blockSize} bytes");
            }
            var tableBytes = (int)VhdFormat.RoundUp(header.MaxTableEntries * 4L, VhdFormat.SectorSize);
            if (header.TableOffset < headerAt + VhdFormat.HeaderSize || header.TableOffset > (footerAt ?? long.MaxValue) - tableBytes)
            {
                throw new VhdFormatException($"the block allocation table is at byte {header.TableOffset}, overlapping the header or outside the VHD");
            }
            await reader.SkipToAsync(header.TableOffset, "the block allocation table", cancellationToken).ConfigureAwait(false);
            var table = ArrayPool<byte>.Shared.Rent(tableBytes);
            try
            {
                await reader.ReadExactlyAsync(table.AsMemory(0, tableBytes), "the block allocation table", cancellationToken).ConfigureAwait(false);
                var order = CheckTable(table, header, blocks, header.TableOffset + tableBytes, footerAt);
                await ApplyBlocksAsync(order, header, size, footer.DiskType).ConfigureAwait(false);
                await ReadTrailingFooterAsync(footer).ConfigureAwait(false);
                if (options.ZeroUnallocated && footer.DiskType == VhdDiskType.Dynamic)
                {
                    await ZeroUnallocatedBlocksAsync(table, blockSize, blocks, size).ConfigureAwait(false);
                }
                return new VhdImportResult(
                    footer.DiskType,
                    size,
                    footer.UniqueId,
                    footer.DiskType == VhdDiskType.Differencing ? header.ParentUniqueId : null,
                    order.Length,
                    reader.Position);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(table);
            }
        }

        /// <summary>The allocated blocks in file order, as (byte offset, block index), after checking they fit and do not overlap.</summary>
        private static (long Offset, int Index)[] CheckTable(byte[] table, VhdDynamicHeader header, long blocks, long tableEnd, long? footerAt)
        {
            var count = 0;
            for (var i = 0; i < header.MaxTableEntries; i++)
            {
                if (BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan(i * 4)) != VhdFormat.Unallocated)
                {
                    if (i >= blocks)
                    {
                        throw new VhdFormatException($"the block allocation table allocates block {i}, past the disk's {blocks} blocks");
                    }
                    count++;
                }
            }
            var order = new (long Offset, int Index)[count];
            var n = 0;
            for (var i = 0; i < blocks; i++)
            {
                var sector = BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan(i * 4));
                if (sector == VhdFormat.Unallocated)
                {
                    continue;
                }
                var offset = (long)sector * VhdFormat.SectorSize;
                if (offset < tableEnd)
                {
                    throw new VhdFormatException($"the block allocation table puts block {i} at byte {offset}, inside the VHD's footer copy, header or table");
                }
                order[n++] = (offset, i);
            }
            Array.Sort(order);
            var span = VhdFormat.BitmapSize(header.BlockSize) + (long)header.BlockSize;
            for (var k = 0; k < order.Length; k++)
            {
                if (k > 0 && order[k].Offset < order[k - 1].Offset + span)
                {
                    throw new VhdFormatException($"blocks {order[k - 1].Index} and {order[k].Index} overlap in the VHD file (at bytes {order[k - 1].Offset} and {order[k].Offset}, each {span} bytes long)");
                }
                if (footerAt is { } end && order[k].Offset + span > end)
                {
                    throw new VhdFormatException($"the block allocation table puts block {order[k].Index} at bytes {order[k].Offset} to {order[k].Offset + span}, past the end of the VHD's {end + VhdFormat.FooterSize} bytes");
                }
            }
            return order;
        }

        private async Task ApplyBlocksAsync((long Offset, int Index)[] order, VhdDynamicHeader header, long size, VhdDiskType type)
        {
            var blockSize = header.BlockSize;
            var bitmapSize = VhdFormat.BitmapSize(blockSize);
            var chunk = Math.Min(blockSize, ChunkSize);
            // An overlay writes marked sectors only; a whole import makes unmarked ones zeros.
            var whole = options.ZeroUnallocated && type == VhdDiskType.Dynamic;
            // Up to WritesInFlight chunks are written at once, each from its own slot (data and a
            // copy of its block's bitmap), while the next is received: a disk written without the
            // page cache takes each write at the device's pace, and one at a time would idle it.
            var slots = Enumerable.Range(0, WritesInFlight).Select(_ => (Data: ArrayPool<byte>.Shared.Rent(chunk), Bitmap: ArrayPool<byte>.Shared.Rent(bitmapSize))).ToArray();
            var writes = new Task?[WritesInFlight];
            var blockBitmap = ArrayPool<byte>.Shared.Rent(bitmapSize);
            var next = 0;
            try
            {
                for (var b = 0; b < order.Length; b++)
                {
                    var (offset, index) = order[b];
                    var what = $"block {index}";
                    await reader.SkipToAsync(offset, what, cancellationToken).ConfigureAwait(false);
                    await reader.ReadExactlyAsync(blockBitmap.AsMemory(0, bitmapSize), what, cancellationToken).ConfigureAwait(false);
                    for (var within = 0; within < blockSize; within += chunk)
                    {
                        var slot = next;
                        next = (next + 1) % WritesInFlight;
                        if (writes[slot] is { } earlier)
                        {
                            writes[slot] = null;
                            await earlier.ConfigureAwait(false);
                        }
                        var (buffer, bitmap) = slots[slot];
                        await reader.ReadExactlyAsync(buffer.AsMemory(0, chunk), what, cancellationToken).ConfigureAwait(false);
                        var at = ((long)index * blockSize) + within;
                        if (at < size)
                        {
                            blockBitmap.AsSpan(0, bitmapSize).CopyTo(bitmap);
                            var length = (int)Math.Min(chunk, size - at);
                            writes[slot] = ApplyChunkAsync(buffer, length, bitmap, within / VhdFormat.SectorSize, at, whole);
                        }
                    }
                }
                for (var slot = 0; slot < WritesInFlight; slot++)
                {
                    if (writes[slot] is { } pending)
                    {
                        writes[slot] = null;
                        await pending.ConfigureAwait(false);
                    }
                }
            }
            finally
            {
                foreach (var pending in writes)
                {
                    if (pending is null)
                    {
                        continue;
                    }
                    try
                    {
                        await pending.ConfigureAwait(false);
                    }
                    catch (Exception)
                    {
                        // The failure already thrown is the error to report; this write only has to end before its buffer is reused.
                    }
                }
                foreach (var (buffer, bitmap) in slots)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    ArrayPool<byte>.Shared.Return(bitmap);
                }
                ArrayPool<byte>.Shared.Return(blockBitmap);
            }
        }

        private async Task ApplyChunkAsync(byte[] buffer, int length, byte[] bitmap, int firstSector, long at, bool whole)
        {
            var sectors = (int)VhdFormat.CeilDiv(length, VhdFormat.SectorSize);
            var s = 0;
            while (s < sectors)
            {
                var set = IsMarked(bitmap, firstSector + s);
                var runEnd = s + 1;
                while (runEnd < sectors && IsMarked(bitmap, firstSector + runEnd) == set)
                {
                    runEnd++;
                }
                var from = s * VhdFormat.SectorSize;
                var to = Math.Min(length, runEnd * VhdFormat.SectorSize);
                if (!set && whole)
                {
                    buffer.AsSpan(from, to - from).Clear();
                }
                else if (!whole)
                {
                    if (set)
                    {
                        await WriteOrZeroAsync(buffer.AsMemory(from, to - from), at + from).ConfigureAwait(false);
                    }
                }
                s = runEnd;
            }
            if (whole)
            {
                await WriteOrZeroAsync(buffer.AsMemory(0, length), at).ConfigureAwait(false);
            }
        }

        private static bool IsMarked(byte[] bitmap, int sector) => (bitmap[sector >> 3] & (0x80 >> (sector & 7))) != 0;

        /// <summary>Writes data; for zeros, makes only the parts of the disk that hold data read as zeros, keeping a thin disk thin.</summary>
        private async ValueTask WriteOrZeroAsync(ReadOnlyMemory<byte> data, long at)
        {
            if (data.Span.ContainsAnyExcept((byte)0))
            {
                await target.WriteAsync(at, data, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await ZeroDataAsync(at, data.Length).ConfigureAwait(false);
            }
        }

        private async ValueTask ZeroDataAsync(long offset, long length)
        {
            var extents = new List<DiskExtent>();
            await foreach (var extent in target.MapAsync(offset, length, cancellationToken).ConfigureAwait(false))
            {
                if (!extent.Zero)
                {
                    extents.Add(extent);
                }
            }
            foreach (var extent in extents)
            {
                await target.WriteZeroesAsync(extent.Offset, extent.Length, cancellationToken).ConfigureAwait(false);
            }
        }

        private async Task ZeroUnallocatedBlocksAsync(byte[] table, int blockSize, long blocks, long size)
        {
            var run = -1L;
            for (var i = 0L; i <= blocks; i++)
            {
                var free = i < blocks && BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan((int)i * 4)) == VhdFormat.Unallocated;
                if (free && run < 0)
                {
                    run = i;
                }
                else if (!free && run >= 0)
                {
                    var start = run * blockSize;
                    await ZeroDataAsync(start, Math.Min(i * (long)blockSize, size) - start).ConfigureAwait(false);
                    run = -1;
                }
            }
        }

        private async Task ReadTrailingFooterAsync(VhdFooter copy)
        {
            var tail = new byte[VhdFormat.FooterSize];
            if (reader.Length is { } length)
            {
                await reader.SkipToAsync(length - VhdFormat.FooterSize, "the footer at the end", cancellationToken).ConfigureAwait(false);
                await reader.ReadExactlyAsync(tail, "the footer at the end", cancellationToken).ConfigureAwait(false);
            }
            else if (await reader.ReadToEndKeepingTailAsync(tail, cancellationToken).ConfigureAwait(false) < VhdFormat.FooterSize)
            {
                throw new VhdFormatException($"the VHD stream ends early, at byte {reader.Position}, without the footer that must end it");
            }
            var footer = VhdFooter.Parse(tail, "the footer at the end of the VHD");
            if (footer.DiskType != copy.DiskType || footer.CurrentSize != copy.CurrentSize || footer.UniqueId != copy.UniqueId)
            {
                throw new VhdFormatException($"the footer at the end of the VHD ({footer.DiskType}, {footer.CurrentSize} bytes, {footer.UniqueId}) does not match its copy at the start ({copy.DiskType}, {copy.CurrentSize} bytes, {copy.UniqueId})");
            }
        }

        /// <param name="first">The first 512 bytes, held back in case the stream ends there.</param>
        /// <param name="after">Bytes already read behind them.</param>
        public async Task<VhdImportResult> ImportFixedAsync(byte[] first, ReadOnlyMemory<byte> after)
        {
            if (reader.Length is { } length && length - VhdFormat.FooterSize > target.Size)
            {
                throw new VhdTooLargeException(length - VhdFormat.FooterSize, target.Size);
            }
            // Each buffer holds a chunk plus the 512 bytes held back in case they are the footer.
            var slot = ChunkSize + VhdFormat.FooterSize;
            byte[][] buffers = [ArrayPool<byte>.Shared.Rent(slot), ArrayPool<byte>.Shared.Rent(slot)];
            Task? writing = null;
            var position = 0L;
            try
            {
                var turn = 0;
                first.CopyTo(buffers[turn], 0);
                after.CopyTo(buffers[turn].AsMemory(VhdFormat.FooterSize));
                var carried = after.Length;
                while (true)
                {
                    var buffer = buffers[turn];
                    var have = VhdFormat.FooterSize + carried + await reader.ReadUpToAsync(buffer.AsMemory(VhdFormat.FooterSize + carried, ChunkSize - carried), cancellationToken).ConfigureAwait(false);
                    carried = 0;
                    var data = have - VhdFormat.FooterSize;
                    if (position + data > target.Size)
                    {
                        throw new VhdTooLargeException(position + data, target.Size);
                    }
                    if (writing is not null)
                    {
                        await writing.ConfigureAwait(false);
                        writing = null;
                    }
                    turn ^= 1;
                    buffer.AsSpan(data, VhdFormat.FooterSize).CopyTo(buffers[turn]);
                    if (data > 0)
                    {
                        writing = WriteOrZeroAsync(buffer.AsMemory(0, data), position).AsTask();
                        position += data;
                    }
                    if (have < slot)
                    {
                        break;
                    }
                }
                if (writing is not null)
                {
                    await writing.ConfigureAwait(false);
                    writing = null;
                }
                var footer = VhdFooter.Parse(buffers[turn].AsSpan(0, VhdFormat.FooterSize), "the footer at the end of the VHD");
                if (footer.DiskType != VhdDiskType.Fixed)
                {
                    throw new VhdFormatException($"the VHD has no footer copy at its start, as a fixed disk has, but its footer says it is {footer.DiskType}");
                }
                if (footer.CurrentSize != position)
                {
                    throw new VhdFormatException($"the fixed VHD's footer gives a virtual size of {footer.CurrentSize} bytes, but it holds {position} bytes of data");
                }
                return new VhdImportResult(VhdDiskType.Fixed, footer.CurrentSize, footer.UniqueId, null, 0, reader.Position);
            }
            finally
            {
                if (writing is not null)
                {
                    try
                    {
                        await writing.ConfigureAwait(false);
                    }
                    catch (Exception)
                    {
                        // The failure already thrown is the one to report.
                    }
                }
                ArrayPool<byte>.Shared.Return(buffers[0]);
                ArrayPool<byte>.Shared.Return(buffers[1]);
            }
        }
    }
}
