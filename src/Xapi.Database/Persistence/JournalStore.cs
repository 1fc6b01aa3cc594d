using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Xapi.Model;

namespace Xapi.Database.Persistence;

/// <summary>
/// The embedded durable store: a write-ahead journal of committed transactions, made durable
/// by group commit (one fsync for every transaction waiting), and a snapshot that compaction
/// writes so the journal can start again. Start-up loads the snapshot, then replays the journal,
/// dropping a torn tail; damage with valid records after it stops the start unless salvaging.
/// </summary>
public sealed class JournalStore : IDurableLog, IDisposable
{
    public const string SnapshotFile = "db.snapshot";
    public const string JournalFile = "db.journal";
    private static readonly byte[] SnapshotMagic = "XAPISNAP"u8.ToArray();
    private static readonly byte[] JournalMagic = "XAPIJRNL"u8.ToArray();

    private readonly string _directory;
    private readonly ILogger _logger;
    private readonly long _compactBytes;
    private readonly XapiDatabase _database;
    private readonly object _queueLock = new();
    private readonly Thread _flusher;
    private List<(byte[] Record, int Length, DbSnapshot Snapshot)> _queue = [];
    private FileStream _journal = null!;
    private long _headerBytes;
    private bool _stopping;
    private TaskCompletionSource? _syncRequested;

    private JournalStore(XapiDatabase database, string directory, long compactBytes, ILogger logger)
    {
        _database = database;
        _directory = directory;
        _compactBytes = compactBytes;
        _logger = logger;
        _flusher = new Thread(FlushLoop) { IsBackground = true, Name = "journal flusher" };
    }

    public JournalLoadReport LoadReport { get; private set; } = null!;

    /// <summary>Loads the database from <paramref name="directory"/> and journals every later commit.</summary>
    /// <param name="salvage">
    /// When the journal is damaged in the middle (valid records follow a bad one), keep every valid
    /// record instead of refusing to start; the damaged files are kept in a <c>damaged-*</c> folder.
    /// </param>
    public static JournalStore Open(XapiDatabase database, string directory, ILogger logger, long compactBytes = 64L << 20, bool salvage = false)
    {
        Directory.CreateDirectory(directory);
        var store = new JournalStore(database, directory, compactBytes, logger);
        store.LoadReport = store.Load(salvage);
        database.AttachLog(store);
        store._flusher.Start();
        return store;
    }

    /// <summary>Bytes of records in the journal since its header (what compaction looks at).</summary>
    public long JournalBytes => _journal.Length - _headerBytes;

    /// <summary>Whether the directory holds a database at all (a snapshot, or a journal with anything in it).</summary>
    public static bool HoldsDatabase(string directory) =>
        File.Exists(Path.Combine(directory, SnapshotFile)) || (File.Exists(Path.Combine(directory, JournalFile)) && new FileInfo(Path.Combine(directory, JournalFile)).Length > 0);

    // ---- loading ----

    private JournalLoadReport Load(bool salvage)
    {
        var watch = Stopwatch.StartNew();
        var snapshotPath = Path.Combine(_directory, SnapshotFile);
        long? snapshotGeneration = null;
        var rows = 0;
        if (File.Exists(snapshotPath))
        {
            (var generation, rows) = LoadSnapshot(snapshotPath);
            snapshotGeneration = generation;
        }
        var journalPath = Path.Combine(_directory, JournalFile);
        var replay = File.Exists(journalPath) ? ReplayJournal(journalPath, snapshotGeneration, salvage) : new Replay(0, 0, 0, false);
        if (replay.Discarded > 0)
        {
            _logger.LogWarning("Journal {Journal} had a torn or corrupt tail: recovered {Records} whole records and discarded {Bytes} bytes after them",
                journalPath, replay.Records, replay.Discarded);
        }
        OpenJournalForAppend(journalPath, replay.RewriteHeader);
        var report = new JournalLoadReport(snapshotGeneration ?? 0, rows, replay.Records, replay.Discarded, _database.Snapshot.Generation, watch.Elapsed)
        {
            SalvagedRecords = replay.Salvaged,
        };
        _logger.LogInformation("Loaded database: snapshot at generation {SnapshotGeneration} ({Rows} rows), {Records} journal records, now at generation {Generation}, in {Elapsed} ms",
            report.SnapshotGeneration, report.SnapshotRows, report.JournalRecords, report.Generation, (long)report.Elapsed.TotalMilliseconds);
        return report;
    }

    private (long Generation, int Rows) LoadSnapshot(string path)
    {
        var dump = ReadSnapshot(File.ReadAllBytes(path), path);
        if (dump.Generation > 0)
        {
            _database.Load(dump.Generation, tx =>
            {
                foreach (var row in dump.Rows)
                {
                    tx.Restore(row.Class, row.Ref, row.Values, row.Created, row.Modified);
                }
                foreach (var tombstone in dump.Tombstones)
                {
                    tx.RestoreTombstone(tombstone);
                }
            });
        }
        return (dump.Generation, dump.Rows.Count);
    }

    /// <summary>
    /// Parses a snapshot (also the database dump format) without loading it. Rows are mapped
    /// onto the current schema; a damaged or foreign file is refused.
    /// </summary>
    public static DatabaseDump ReadSnapshot(byte[] data, string path)
    {
        if (data.Length < SnapshotMagic.Length + 16 || !data.AsSpan(0, SnapshotMagic.Length).SequenceEqual(SnapshotMagic))
        {
            throw new DatabaseFormatException($"{path} is not a database snapshot; refusing to start rather than lose the pool database. Move it aside to start empty.");
        }
        var body = data.AsSpan(0, data.Length - 4);
        if (Crc32C.Compute(body) != BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(data.Length - 4)))
        {
            throw new DatabaseFormatException($"{path} is corrupt (checksum mismatch); refusing to start rather than lose the pool database. Restore it from a backup or a database dump.");
        }
        try
        {
            var reader = new BinaryReader(body[SnapshotMagic.Length..]);
            var version = (int)reader.ReadVarint();
            var dump = new DatabaseDump { Generation = reader.ReadSigned() };
            var layout = StoredLayout.Read(ref reader, version, path);
            var tombstoneCount = reader.ReadCount();
            for (var i = 0; i < tombstoneCount; i++)
            {
                var classOrdinal = reader.ReadOrdinal();
                var cls = classOrdinal < layout.Classes.Length ? layout.Classes[classOrdinal] : throw new FormatException("class out of range");
                var reference = reader.ReadString();
                var created = reader.ReadSigned();
                var deleted = reader.ReadSigned();
                var uuid = reader.ReadString();
                if (cls is not null)
                {
                    dump.Tombstones.Add(new Tombstone(cls, reference, created, deleted, uuid));
                }
            }
            for (var c = 0; c < layout.Classes.Length; c++)
            {
                var count = reader.ReadCount();
                var fields = layout.Fields[c];
                var cls = layout.Classes[c];
                for (var r = 0; r < count; r++)
                {
                    var reference = reader.ReadString();
                    var created = reader.ReadSigned();
                    var modified = reader.ReadSigned();
                    var values = cls is null ? null : DefaultRow(cls);
                    for (var f = 0; f < fields.Length; f++)
                    {
                        var value = reader.ReadValue();
                        if (values is not null && fields[f] is { } field)
                        {
                            values[field.Ordinal] = value;
                        }
                    }
                    if (cls is not null && values is not null)
                    {
                        dump.Rows.Add(new DatabaseDump.DumpRow(cls, reference, values, created, modified));
                    }
                }
            }
            return dump;
        }
        catch (FormatException e)
        {
            throw new DatabaseFormatException($"{path} is corrupt ({e.Message}); refusing to start rather than lose the pool database.", e);
        }
    }

    private static object?[] DefaultRow(ClassMeta cls)
    {
        var values = new object?[cls.Fields.Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = cls.Fields[i].DefaultValue;
        }
        return values;
    }

    private readonly record struct Replay(int Records, long Discarded, int Salvaged, bool RewriteHeader);

    private readonly record struct Write(RowWriteKind Kind, ClassMeta? Class, string Ref, List<(FieldMeta Field, object? Value)>? Values);

    private sealed record Record(long Generation, List<Write> Writes);

    /// <summary>A run of valid records found after damage: where the damage began, where the run starts, its generations.</summary>
    private readonly record struct Run(int DamageAt, int Start, long FirstGeneration, long LastGeneration, int Records);

    // Every commit is one journal record at the next generation, so the records of a journal are
    // consecutive generations: that and the frame checksums are what replay checks and what lets
    // it find whole records again after damage, without a marker in the format.
    private Replay ReplayJournal(string path, long? snapshotGeneration, bool salvage)
    {
        var data = File.ReadAllBytes(path);
        if (!TryReadHeader(data, path, out var layout, out var baseGeneration, out var position))
        {
            // A header torn while compaction rewrote it: everything the journal held is in the snapshot.
            return new Replay(0, 0, 0, RewriteHeader: true);
        }
        if (baseGeneration > 0 && snapshotGeneration is null)
        {
            throw new DatabaseFormatException(
                $"{path} continues a snapshot at generation {baseGeneration}, but {Path.Combine(_directory, SnapshotFile)} is missing; refusing to start rather than lose the pool database or start a new one. Restore {SnapshotFile} from a backup, or move {_directory} aside and restore a database dump.");
        }
        if (baseGeneration > snapshotGeneration)
        {
            throw new DatabaseFormatException(
                $"{path} continues a snapshot at generation {baseGeneration}, but {Path.Combine(_directory, SnapshotFile)} is at generation {snapshotGeneration} (an older copy?); refusing to start rather than load a pool with holes. Restore the matching {SnapshotFile}, or move {_directory} aside and restore a database dump.");
        }

        var records = 0;
        long lastGeneration = snapshotGeneration ?? 0;
        int? damageAt = null;
        while (position < data.Length)
        {
            if (!TryDecode(data, position, layout, out var record, out var end))
            {
                damageAt = position;
                break;
            }
            if (record.Generation > _database.Snapshot.Generation)
            {
                if (record.Generation != _database.Snapshot.Generation + 1)
                {
                    throw new DatabaseFormatException(
                        $"{path}: the record at offset {position} is generation {record.Generation}, but the database loaded so far ends at generation {_database.Snapshot.Generation} ({(snapshotGeneration is null ? $"{SnapshotFile} is missing" : $"{SnapshotFile} is at generation {snapshotGeneration}")}); refusing to start rather than load a pool with holes. Restore the matching {SnapshotFile} from a backup, or move {_directory} aside and restore a database dump.");
                }
                Apply(record, path, position, tolerant: false);
                records++;
            }
            lastGeneration = record.Generation;
            position = end;
        }
        if (damageAt is not { } damage)
        {
            return new Replay(records, 0, 0, false);
        }

        var runs = FindRunsAfter(data, damage, lastGeneration, layout);
        var following = runs.Sum(r => r.Records);
        if (following == 0 || runs[^1].LastGeneration <= _database.Snapshot.Generation)
        {
            // A torn tail (nothing whole after it), or damage among records the snapshot already holds.
            using var truncate = new FileStream(path, FileMode.Open, FileAccess.Write);
            truncate.SetLength(damage);
            truncate.Flush(flushToDisk: true);
            return new Replay(records, data.Length - damage, 0, false);
        }
        if (!salvage)
        {
            throw new DatabaseFormatException(
                $"{path} is corrupt at offset {damage}: the record there fails its checksum or does not decode, but {following} valid records follow it (generations {runs[0].FirstGeneration}–{runs[^1].LastGeneration}); refusing to start and leaving every file as it is. Start once with --salvage-journal to keep every valid record (the damaged files are kept aside), or restore {_directory} from a backup.");
        }
        return Salvage(path, data, layout, runs, records, lastGeneration);
    }

    private Replay Salvage(string path, byte[] data, StoredLayout layout, List<Run> runs, int records, long lastGoodGeneration)
    {
        var aside = Path.Combine(_directory, $"damaged-{DateTime.UtcNow:yyyyMMdd'T'HHmmss'Z'}");
        Directory.CreateDirectory(aside);
        var snapshotPath = Path.Combine(_directory, SnapshotFile);
        if (File.Exists(snapshotPath))
        {
            // The salvaged state replaces the snapshot; the old one stays with the damaged journal.
            File.Copy(snapshotPath, Path.Combine(aside, SnapshotFile));
        }
        var salvaged = 0;
        var skipped = 0;
        var before = lastGoodGeneration;
        foreach (var run in runs)
        {
            _logger.LogWarning("Journal {Journal} is damaged from offset {Offset} to {End}: generations {LostFrom}–{LostTo} are lost",
                path, run.DamageAt, run.Start, before + 1, run.FirstGeneration - 1);
            var position = run.Start;
            for (var i = 0; i < run.Records; i++)
            {
                TryDecode(data, position, layout, out var record, out var end);
                if (record!.Generation > _database.Snapshot.Generation)
                {
                    skipped += Apply(record, path, position, tolerant: true);
                    salvaged++;
                }
                position = end;
            }
            before = run.LastGeneration;
        }
        // Renamed only now: until the salvaged state is written, the original files are the truth.
        WriteSnapshot(_database.Snapshot, snapshotPath);
        File.Move(path, Path.Combine(aside, JournalFile));
        FlushDirectory(_directory);
        _logger.LogWarning("Salvaged {Salvaged} valid journal records after the damage ({Skipped} of their writes referred to rows lost with it and were skipped); now at generation {Generation}; the damaged journal and the snapshot it followed are kept in {Aside}",
            salvaged, skipped, _database.Snapshot.Generation, aside);
        return new Replay(records + salvaged, 0, salvaged, false);
    }

    /// <summary>
    /// The runs of whole records after the damage at <paramref name="damage"/>: each starts at a
    /// frame whose checksum holds, whose payload decodes, and whose generation could follow the last
    /// good one given the bytes in between; records of a run are consecutive generations.
    /// </summary>
    private static List<Run> FindRunsAfter(byte[] data, int damage, long lastGeneration, StoredLayout layout)
    {
        var runs = new List<Run>();
        var damageAt = damage;
        while (true)
        {
            var start = FindRecordAfter(data, damageAt, lastGeneration, layout);
            if (start < 0)
            {
                return runs;
            }
            var position = start;
            long first = 0;
            long last = 0;
            var count = 0;
            while (position < data.Length && TryDecode(data, position, layout, out var record, out var end) && (count == 0 || record.Generation == last + 1))
            {
                if (count == 0)
                {
                    first = record.Generation;
                }
                last = record.Generation;
                count++;
                position = end;
            }
            runs.Add(new Run(damageAt, start, first, last, count));
            if (position >= data.Length)
            {
                return runs;
            }
            damageAt = position;
            lastGeneration = last;
        }
    }

    private static int FindRecordAfter(byte[] data, int damage, long lastGeneration, StoredLayout layout)
    {
        for (var p = damage + 1; p <= data.Length - 10; p++)
        {
            var length = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(p));
            if (length < 2 || length > data.Length - p - 8)
            {
                continue;
            }
            // Each frame takes at least 10 bytes, so only so many records fit between the damage and here.
            var generation = PeekGeneration(data.AsSpan(p + 8, (int)length));
            if (generation <= lastGeneration || generation > lastGeneration + 2 + (p - damage) / 10)
            {
                continue;
            }
            if (TryDecode(data, p, layout, out _, out _))
            {
                return p;
            }
        }
        return -1;
    }

    private static long PeekGeneration(ReadOnlySpan<byte> payload)
    {
        try
        {
            var reader = new BinaryReader(payload);
            return reader.ReadSigned();
        }
        catch (FormatException)
        {
            return -1;
        }
    }

    // Header: magic, then a frame of [version][layout][base generation]. The base generation (the
    // snapshot the journal continues) came after format 1's first files; a header without it is read
    // as before, and daemons that do not know it ignore it.
    private static bool TryReadHeader(byte[] data, string path, out StoredLayout layout, out long baseGeneration, out int position)
    {
        layout = null!;
        baseGeneration = 0;
        position = 0;
        var magicLength = Math.Min(data.Length, JournalMagic.Length);
        if (!data.AsSpan(0, magicLength).SequenceEqual(JournalMagic.AsSpan(0, magicLength)))
        {
            throw new DatabaseFormatException($"{path} is not a database journal; refusing to start. Move it aside to start from {SnapshotFile} alone.");
        }
        position = JournalMagic.Length;
        if (data.Length < position + 8 || BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(position)) > data.Length - position - 8)
        {
            return false;
        }
        var header = ReadFrame(data, ref position)
            ?? throw new DatabaseFormatException($"{path} has a corrupt header; refusing to start. Restore it from a backup, or move it aside to start from {SnapshotFile} alone (losing the writes since the snapshot).");
        try
        {
            var headerReader = new BinaryReader(header.Span);
            var version = (int)headerReader.ReadVarint();
            layout = StoredLayout.Read(ref headerReader, version, path);
            if (!headerReader.AtEnd)
            {
                baseGeneration = headerReader.ReadSigned();
            }
        }
        catch (FormatException e)
        {
            throw new DatabaseFormatException($"{path} has a corrupt header ({e.Message}); refusing to start.", e);
        }
        return true;
    }

    // A frame is [u32 length][u32 crc32c][payload]; null when torn or corrupt.
    private static ReadOnlyMemory<byte>? ReadFrame(byte[] data, ref int position)
    {
        if (data.Length - position < 8)
        {
            return null;
        }
        var length = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(position));
        var crc = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(position + 4));
        if (length > data.Length - position - 8)
        {
            return null;
        }
        var payload = data.AsMemory(position + 8, (int)length);
        if (Crc32C.Compute(payload.Span) != crc)
        {
            return null;
        }
        position += 8 + (int)length;
        return payload;
    }

    /// <summary>The record at <paramref name="position"/> when its frame is whole, its checksum holds and its payload decodes.</summary>
    private static bool TryDecode(byte[] data, int position, StoredLayout layout, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Record? record, out int end)
    {
        record = null;
        end = position;
        var frame = ReadFrame(data, ref end);
        if (frame is null)
        {
            return false;
        }
        try
        {
            record = Decode(frame.Value.Span, layout);
            return true;
        }
        catch (FormatException)
        {
            end = position;
            return false;
        }
    }

    private static Record Decode(ReadOnlySpan<byte> payload, StoredLayout layout)
    {
        var reader = new BinaryReader(payload);
        var generation = reader.ReadSigned();
        if (generation <= 0)
        {
            throw new FormatException("generation out of range");
        }
        var writes = new List<Write>();
        var count = reader.ReadCount();
        for (var i = 0; i < count; i++)
        {
            var kind = (RowWriteKind)reader.ReadByte();
            if (kind is not (RowWriteKind.Create or RowWriteKind.Update or RowWriteKind.Touch or RowWriteKind.Delete))
            {
                throw new FormatException("unknown write kind");
            }
            var classOrdinal = reader.ReadOrdinal();
            if (classOrdinal >= layout.Classes.Length)
            {
                throw new FormatException("class out of range");
            }
            var cls = layout.Classes[classOrdinal];
            var reference = reader.ReadString();
            List<(FieldMeta, object?)>? values = null;
            if (kind is RowWriteKind.Create or RowWriteKind.Update)
            {
                values = [];
                var fieldCount = reader.ReadCount();
                for (var f = 0; f < fieldCount; f++)
                {
                    var fieldOrdinal = reader.ReadOrdinal();
                    var value = reader.ReadValue();
                    if (fieldOrdinal < layout.Fields[classOrdinal].Length && layout.Fields[classOrdinal][fieldOrdinal] is { } field)
                    {
                        values.Add((field, value));
                    }
                }
            }
            writes.Add(new Write(kind, cls, reference, values));
        }
        if (!reader.AtEnd)
        {
            throw new FormatException("bytes after the record");
        }
        return new Record(generation, writes);
    }

    /// <summary>
    /// Applies a record at its generation. Tolerant (salvage): a write to a row lost with the damage
    /// is skipped and counted; otherwise such a record stops the start.
    /// </summary>
    private int Apply(Record record, string path, int offset, bool tolerant)
    {
        var skipped = 0;
        try
        {
            _database.Load(record.Generation, tx =>
            {
                foreach (var (kind, cls, reference, values) in record.Writes)
                {
                    if (cls is null || XapiDatabase.IsTransient(cls))
                    {
                        continue;
                    }
                    try
                    {
                        ApplyWrite(tx, kind, cls, reference, values);
                    }
                    catch (XenApiException) when (tolerant)
                    {
                        skipped++;
                    }
                }
            });
        }
        catch (XenApiException e)
        {
            throw new DatabaseFormatException(
                $"{path}: the record at offset {offset} (generation {record.Generation}) does not apply to the database loaded before it ({e.Message}); refusing to start. Restore the matching {SnapshotFile} from a backup, or move {_directory} aside and restore a database dump.", e);
        }
        return skipped;
    }

    private static void ApplyWrite(Transaction tx, RowWriteKind kind, ClassMeta cls, string reference, List<(FieldMeta Field, object? Value)>? values)
    {
        switch (kind)
        {
            case RowWriteKind.Create:
                tx.Create(cls, values!.ToDictionary(v => v.Field.Name, v => v.Value), reference);
                break;
            case RowWriteKind.Update:
                tx.Update(cls, reference, row =>
                {
                    foreach (var (field, value) in values!)
                    {
                        row[field.Ordinal] = value;
                    }
                });
                break;
            case RowWriteKind.Touch:
                tx.Touch(cls, reference);
                break;
            case RowWriteKind.Delete:
                tx.Delete(cls, reference);
                break;
        }
    }

    // ---- appending ----

    private void OpenJournalForAppend(string path, bool rewriteHeader)
    {
        _journal = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read, 1, FileOptions.None);
        if (_journal.Length == 0 || rewriteHeader)
        {
            WriteJournalHeader(_database.Snapshot.Generation);
        }
        else
        {
            _headerBytes = JournalHeaderLength();
        }
        _journal.Seek(0, SeekOrigin.End);
    }

    private void WriteJournalHeader(long baseGeneration)
    {
        var header = new ArrayBufferWriter<byte>();
        header.Write(JournalMagic);
        var layout = new ArrayBufferWriter<byte>();
        BinaryCodec.WriteVarint(layout, StoredLayout.CurrentVersion);
        StoredLayout.WriteCurrent(layout);
        BinaryCodec.WriteSigned(layout, baseGeneration);
        WriteFrame(header, layout.WrittenSpan);
        _journal.SetLength(0);
        _journal.Write(header.WrittenSpan);
        _journal.Flush(flushToDisk: true);
        _headerBytes = header.WrittenCount;
    }

    private long JournalHeaderLength()
    {
        Span<byte> prefix = stackalloc byte[12];
        _journal.Seek(0, SeekOrigin.Begin);
        _journal.ReadExactly(prefix);
        return JournalMagic.Length + 8 + BinaryPrimitives.ReadUInt32LittleEndian(prefix[JournalMagic.Length..]);
    }

    private static void WriteFrame(IBufferWriter<byte> output, ReadOnlySpan<byte> payload)
    {
        var span = output.GetSpan(8);
        BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Crc32C.Compute(payload));
        output.Advance(8);
        output.Write(payload);
    }

    /// <summary>Encodes the transaction (under the database's write lock) and queues it for the flusher.</summary>
    public void Append(DbSnapshot committed, IReadOnlyList<RowWrite> writes)
    {
        var payload = new ArrayBufferWriter<byte>(256);
        BinaryCodec.WriteSigned(payload, committed.Generation);
        var persistent = writes.Where(o => !XapiDatabase.IsTransient(o.Class)).ToList();
        BinaryCodec.WriteVarint(payload, (ulong)persistent.Count);
        foreach (var write in persistent)
        {
            payload.GetSpan(1)[0] = (byte)write.Kind;
            payload.Advance(1);
            BinaryCodec.WriteVarint(payload, (ulong)write.Class.Ordinal);
            BinaryCodec.WriteString(payload, write.Ref);
            if (write.Kind is RowWriteKind.Create or RowWriteKind.Update)
            {
                // Values as committed: a later write of the same transaction may have changed them again.
                var row = committed.TryGet(write.Class, write.Ref, out var r) ? r : null;
                var ordinals = write.Kind == RowWriteKind.Create
                    ? Enumerable.Range(0, write.Class.Fields.Count).ToList()
                    : write.ChangedFields!.ToList();
                BinaryCodec.WriteVarint(payload, (ulong)(row is null ? 0 : ordinals.Count));
                if (row is not null)
                {
                    foreach (var ordinal in ordinals)
                    {
                        BinaryCodec.WriteVarint(payload, (ulong)ordinal);
                        BinaryCodec.WriteValue(payload, row.Values[ordinal]);
                    }
                }
            }
        }
        var frame = new ArrayBufferWriter<byte>(payload.WrittenCount + 8);
        WriteFrame(frame, payload.WrittenSpan);
        lock (_queueLock)
        {
            _queue.Add((frame.WrittenSpan.ToArray(), frame.WrittenCount, committed));
            Monitor.Pulse(_queueLock);
        }
    }

    private void FlushLoop()
    {
        while (true)
        {
            List<(byte[] Record, int Length, DbSnapshot Snapshot)> batch;
            lock (_queueLock)
            {
                while (_queue.Count == 0 && !_stopping && _syncRequested is null)
                {
                    Monitor.Wait(_queueLock);
                }
                if (_queue.Count == 0 && _stopping)
                {
                    return;
                }
                batch = _queue;
                _queue = [];
            }
            if (batch.Count == 0)
            {
                ServeSyncRequest();
                continue;
            }
            try
            {
                foreach (var (record, length, _) in batch)
                {
                    _journal.Write(record, 0, length);
                }
                // One fsync makes every transaction of the batch durable: group commit.
                _journal.Flush(flushToDisk: true);
                _database.MarkDurable(batch[^1].Snapshot);
                if (JournalBytes > _compactBytes)
                {
                    Compact(batch[^1].Snapshot);
                }
                ServeSyncRequest();
            }
            catch (Exception e)
            {
                // Nothing after this can be made durable; replies already waiting would hang, so stop loudly.
                _logger.LogCritical(e, "The database journal could not be written; stopping");
                Environment.FailFast("xapi-dotnet: the database journal could not be written: " + e.Message, e);
            }
        }
    }

    /// <summary>Writes a snapshot of everything durable now (<c>pool.sync_database</c>).</summary>
    public Task SyncAsync()
    {
        lock (_queueLock)
        {
            _syncRequested ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Monitor.Pulse(_queueLock);
            return _syncRequested.Task;
        }
    }

    // On the flusher thread, after the batch it just made durable, so nothing is in between.
    private void ServeSyncRequest()
    {
        TaskCompletionSource? request;
        lock (_queueLock)
        {
            request = _syncRequested;
            _syncRequested = null;
        }
        if (request is null)
        {
            return;
        }
        try
        {
            Compact(_database.Snapshot);
            request.SetResult();
        }
        catch (Exception e)
        {
            request.SetException(e);
        }
    }

    /// <summary>Writes a snapshot of <paramref name="durable"/> and starts the journal again after it.</summary>
    private void Compact(DbSnapshot durable)
    {
        var watch = Stopwatch.StartNew();
        WriteSnapshot(durable, Path.Combine(_directory, SnapshotFile));
        WriteJournalHeader(durable.Generation);
        _logger.LogInformation("Compacted the database at generation {Generation} in {Elapsed} ms", durable.Generation, watch.ElapsedMilliseconds);
    }

    public static void WriteSnapshot(DbSnapshot snapshot, string path)
    {
        var output = EncodeSnapshot(snapshot);
        var temp = path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
        {
            file.Write(output.WrittenSpan);
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        FlushDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>The snapshot format in memory: what compaction writes and a database dump sends.</summary>
    public static ArrayBufferWriter<byte> EncodeSnapshot(DbSnapshot snapshot) =>
        Encode(
            snapshot.Generation,
            snapshot.Tombstones.Where(t => !XapiDatabase.IsTransient(t.Class)).ToList(),
            cls => XapiDatabase.IsTransient(cls) ? [] : snapshot.All(cls).Select(r => (r.Ref, r.Created, r.Modified, r.Values)).ToList());

    /// <summary>
    /// What <c>GET /pool/xmldbdump</c> sends: the snapshot format, with references to objects
    /// that no longer exist cleared (see <see cref="DumpValidator.WithoutDanglingReferences"/>),
    /// so that every dump this daemon writes is one <see cref="DumpValidator.Validate"/> accepts.
    /// </summary>
    public static ArrayBufferWriter<byte> EncodeRestorableDump(DbSnapshot snapshot) =>
        Encode(
            snapshot.Generation,
            snapshot.Tombstones.Where(t => !XapiDatabase.IsTransient(t.Class)).ToList(),
            cls => XapiDatabase.IsTransient(cls) ? [] : snapshot.All(cls).Select(r => (r.Ref, r.Created, r.Modified, r.Values)).ToList(),
            (field, value) => DumpValidator.WithoutDanglingReferences(snapshot, field, value));

    /// <summary>
    /// A dump's rows in the snapshot format, as they are: nothing is checked, so tools and tests
    /// can write what a damaged or hostile dump would hold.
    /// </summary>
    public static ArrayBufferWriter<byte> EncodeDump(DatabaseDump dump)
    {
        var byClass = dump.Rows.ToLookup(r => r.Class);
        return Encode(dump.Generation, dump.Tombstones,
            cls => byClass[cls].Select(r => (r.Ref, r.Created, r.Modified, (IReadOnlyList<object?>)r.Values)).ToList());
    }

    private static ArrayBufferWriter<byte> Encode(long generation, IReadOnlyList<Tombstone> tombstones,
        Func<ClassMeta, IReadOnlyList<(string Ref, long Created, long Modified, IReadOnlyList<object?> Values)>> rowsOf,
        Func<FieldMeta, object?, object?>? transform = null)
    {
        var output = new ArrayBufferWriter<byte>(1 << 20);
        output.Write(SnapshotMagic);
        BinaryCodec.WriteVarint(output, StoredLayout.CurrentVersion);
        BinaryCodec.WriteSigned(output, generation);
        StoredLayout.WriteCurrent(output);
        BinaryCodec.WriteVarint(output, (ulong)tombstones.Count);
        foreach (var tombstone in tombstones)
        {
            BinaryCodec.WriteVarint(output, (ulong)tombstone.Class.Ordinal);
            BinaryCodec.WriteString(output, tombstone.Ref);
            BinaryCodec.WriteSigned(output, tombstone.Created);
            BinaryCodec.WriteSigned(output, tombstone.Deleted);
            BinaryCodec.WriteString(output, tombstone.Uuid);
        }
        foreach (var cls in ApiSchema.Classes)
        {
            var rows = rowsOf(cls);
            BinaryCodec.WriteVarint(output, (ulong)rows.Count);
            foreach (var (reference, created, modified, values) in rows)
            {
                BinaryCodec.WriteString(output, reference);
                BinaryCodec.WriteSigned(output, created);
                BinaryCodec.WriteSigned(output, modified);
                for (var i = 0; i < values.Count; i++)
                {
                    BinaryCodec.WriteValue(output, transform is null ? values[i] : transform(cls.Fields[i], values[i]));
                }
            }
        }
        var crc = output.GetSpan(4);
        BinaryPrimitives.WriteUInt32LittleEndian(crc, Crc32C.Compute(output.WrittenSpan));
        output.Advance(4);
        return output;
    }

    // The rename is durable only once the directory entry is; .NET will not open a directory,
    // so this goes to libc.
    private static void FlushDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        var fd = NativeMethods.Open(directory, 0);
        if (fd >= 0)
        {
            NativeMethods.Fsync(fd);
            NativeMethods.Close(fd);
        }
    }

    private static class NativeMethods
    {
        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "open", SetLastError = true)]
        public static extern int Open([System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int flags);

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static extern int Fsync(int fd);

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "close", SetLastError = true)]
        public static extern int Close(int fd);
    }

    /// <summary>
    /// Closes the files without the final compaction, for a start refused after loading, so the
    /// data dir stays as it was found. Records already queued are still written.
    /// </summary>
    public void Abandon()
    {
        lock (_queueLock)
        {
            _stopping = true;
            Monitor.Pulse(_queueLock);
        }
        _flusher.Join();
        _journal.Dispose();
    }

    /// <summary>Writes everything queued, compacts, and closes the files.</summary>
    public void Dispose()
    {
        lock (_queueLock)
        {
            _stopping = true;
            Monitor.Pulse(_queueLock);
        }
        _flusher.Join();
        Compact(_database.Snapshot);
        _journal.Dispose();
    }
}

/// <summary>The rows of a database dump, ready to replace the pool's.</summary>
public sealed class DatabaseDump
{
    public sealed record DumpRow(ClassMeta Class, string Ref, object?[] Values, long Created, long Modified);

    public long Generation { get; init; }

    public List<DumpRow> Rows { get; } = [];

    public List<Tombstone> Tombstones { get; } = [];
}

public sealed record JournalLoadReport(long SnapshotGeneration, int SnapshotRows, int JournalRecords, long DiscardedBytes, long Generation, TimeSpan Elapsed)
{
    /// <summary>Valid records kept from after damage in the middle of the journal (salvage only).</summary>
    public int SalvagedRecords { get; init; }
}
