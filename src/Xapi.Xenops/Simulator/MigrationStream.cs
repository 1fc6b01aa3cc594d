using System.Buffers.Binary;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// The simulator's live-migration stream: a header naming the VM and its memory, batches of pages
/// (index, version, the page's 4 KiB), then an end record with the digest of the whole memory and
/// the guest's device state as a suspend image. Every page is checked against its version on
/// arrival, and the digest at the end, so a stream that lost or altered a byte is refused.
/// </summary>
internal static class MigrationStream
{
    public const int PagesPerBatch = 256;
    private const byte PagesTag = 1;
    private const byte EndTag = 2;
    private const int HeaderSize = 8 + 16 + 4 + 8;
    private const int PageHeaderSize = 8;
    private static readonly byte[] s_magic = "XSIMMIG1"u8.ToArray();

    public sealed record Header(Guid Uuid, int Pages, ulong Seed);

    public sealed class Writer(Stream destination)
    {
        private readonly byte[] _buffer = new byte[5 + (PagesPerBatch * (PageHeaderSize + GuestMemory.PageSize))];

        public long BytesWritten { get; private set; }

        public async ValueTask WriteHeaderAsync(Header header, CancellationToken cancellationToken)
        {
            s_magic.CopyTo(_buffer, 0);
            header.Uuid.TryWriteBytes(_buffer.AsSpan(8, 16));
            BinaryPrimitives.WriteInt32LittleEndian(_buffer.AsSpan(24), header.Pages);
            BinaryPrimitives.WriteUInt64LittleEndian(_buffer.AsSpan(28), header.Seed);
            await WriteAsync(HeaderSize, cancellationToken);
        }

        /// <summary>Sends the pages at the versions given, generating their bytes as it goes.</summary>
        public async ValueTask WritePagesAsync(ulong seed, IReadOnlyList<(int Page, uint Version)> pages, CancellationToken cancellationToken)
        {
            for (var start = 0; start < pages.Count; start += PagesPerBatch)
            {
                var count = Math.Min(PagesPerBatch, pages.Count - start);
                _buffer[0] = PagesTag;
                BinaryPrimitives.WriteInt32LittleEndian(_buffer.AsSpan(1), count);
                var offset = 5;
                for (var i = 0; i < count; i++)
                {
                    var (page, version) = pages[start + i];
                    BinaryPrimitives.WriteInt32LittleEndian(_buffer.AsSpan(offset), page);
                    BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(offset + 4), version);
                    GuestMemory.Fill(seed, page, version, _buffer.AsSpan(offset + PageHeaderSize, GuestMemory.PageSize));
                    offset += PageHeaderSize + GuestMemory.PageSize;
                }
                await WriteAsync(offset, cancellationToken);
            }
        }

        public async ValueTask WriteEndAsync(byte[] digest, SuspendImageBody state, CancellationToken cancellationToken)
        {
            _buffer[0] = EndTag;
            digest.CopyTo(_buffer, 1);
            await WriteAsync(1 + digest.Length, cancellationToken);
            var counting = new MemoryStream();
            await SuspendImage.WriteAsync(counting, state, cancellationToken);
            counting.Position = 0;
            await counting.CopyToAsync(destination, cancellationToken);
            BytesWritten += counting.Length;
            await destination.FlushAsync(cancellationToken);
        }

        private async ValueTask WriteAsync(int length, CancellationToken cancellationToken)
        {
            await destination.WriteAsync(_buffer.AsMemory(0, length), cancellationToken);
            BytesWritten += length;
        }
    }

    public sealed class Reader(Stream source)
    {
        private readonly byte[] _buffer = new byte[PageHeaderSize + GuestMemory.PageSize];

        public async ValueTask<Header> ReadHeaderAsync(CancellationToken cancellationToken)
        {
            await ReadExactlyAsync(_buffer.AsMemory(0, HeaderSize), cancellationToken);
            if (!_buffer.AsSpan(0, 8).SequenceEqual(s_magic))
            {
                throw new MigrationStreamException("not a simulator migration stream");
            }
            var pages = BinaryPrimitives.ReadInt32LittleEndian(_buffer.AsSpan(24));
            if (pages < 1)
            {
                throw new MigrationStreamException($"the stream announces {pages} pages of memory");
            }
            return new Header(new Guid(_buffer.AsSpan(8, 16)), pages, BinaryPrimitives.ReadUInt64LittleEndian(_buffer.AsSpan(28)));
        }

        /// <summary>Reads page batches into <paramref name="memory"/> until the end record; returns the guest's state.</summary>
        public async ValueTask<SuspendImageBody> ReadMemoryAsync(GuestMemory memory, int maxStateBytes, CancellationToken cancellationToken)
        {
            while (true)
            {
                await ReadExactlyAsync(_buffer.AsMemory(0, 1), cancellationToken);
                switch (_buffer[0])
                {
                    case PagesTag:
                        await ReadExactlyAsync(_buffer.AsMemory(0, 4), cancellationToken);
                        var count = BinaryPrimitives.ReadInt32LittleEndian(_buffer);
                        if (count is < 1 or > PagesPerBatch)
                        {
                            throw new MigrationStreamException($"a batch of {count} pages is outside 1..{PagesPerBatch}");
                        }
                        for (var i = 0; i < count; i++)
                        {
                            await ReadExactlyAsync(_buffer, cancellationToken);
                            var page = BinaryPrimitives.ReadInt32LittleEndian(_buffer);
                            var version = BinaryPrimitives.ReadUInt32LittleEndian(_buffer.AsSpan(4));
                            if (page < 0 || page >= memory.Pages)
                            {
                                throw new MigrationStreamException($"page {page} is outside the guest's {memory.Pages} pages");
                            }
                            if (!GuestMemory.Holds(memory.Seed, page, version, _buffer.AsSpan(PageHeaderSize)))
                            {
                                throw new MigrationStreamException($"page {page} (version {version}) arrived damaged");
                            }
                            memory.Receive(page, version);
                        }
                        break;
                    case EndTag:
                        var digest = new byte[32];
                        await ReadExactlyAsync(digest, cancellationToken);
                        if (!digest.AsSpan().SequenceEqual(memory.Digest()))
                        {
                            throw new MigrationStreamException("the guest's memory as received differs from the sender's");
                        }
                        try
                        {
                            return await SuspendImage.ReadAsync(source, maxStateBytes, cancellationToken);
                        }
                        catch (SuspendImageException e)
                        {
                            throw new MigrationStreamException("the guest's device state: " + e.Message, e);
                        }
                    default:
                        throw new MigrationStreamException($"unknown record {_buffer[0]}");
                }
            }
        }

        private async ValueTask ReadExactlyAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            try
            {
                await source.ReadExactlyAsync(buffer, cancellationToken);
            }
            catch (EndOfStreamException e)
            {
                throw new MigrationStreamException("the migration stream ended early", e);
            }
        }
    }
}
