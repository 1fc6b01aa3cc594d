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
/// dropping a torn last record.
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
    public static JournalStore Open(XapiDatabase database, string directory, ILogger logger, long compactBytes = 64L << 20)
    {
        Directory.CreateDirectory(directory);
        var store = new JournalStore(database, directory, compactBytes, logger);
        store.LoadReport = store.Load();
        database.AttachLog(store);
        store._flusher.Start();
        return store;
    }

    /// <summary>Bytes of records in the journal since its header (what compaction looks at).</summary>
    public long JournalBytes => _journal.Length - _headerBytes;

    // ---- loading ----

    private JournalLoadReport Load()
    {
        var watch = Stopwatch.StartNew();
        var snapshotPath = Path.Combine(_directory, SnapshotFile);
        long snapshotGeneration = 0;
        var rows = 0;
        if (File.Exists(snapshotPath))
        {
            (snapshotGeneration, rows) = LoadSnapshot(snapshotPath);
        }
        var journalPath = Path.Combine(_directory, JournalFile);
        var (records, discarded) = File.Exists(journalPath) ? ReplayJournal(journalPath, snapshotGeneration) : (0, 0L);
        if (discarded > 0)
        {
            _logger.LogWarning("Journal {Journal} had a torn or corrupt tail: recovered {Records} whole records and discarded {Bytes} bytes after them",
                journalPath, records, discarded);
        }
        OpenJournalForAppend(journalPath);
        var report = new JournalLoadReport(snapshotGeneration, rows, records, discarded, _database.Snapshot.Generation, watch.Elapsed);
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

    private (int Records, long Discarded) ReplayJournal(string path, long snapshotGeneration)
    {
        var data = File.ReadAllBytes(path);
        if (data.Length < JournalMagic.Length || !data.AsSpan(0, JournalMagic.Length).SequenceEqual(JournalMagic))
        {
            if (data.Length == 0)
            {
                return (0, 0);
            }
            throw new DatabaseFormatException($"{path} is not a database journal; refusing to start. Move it aside to start from the snapshot alone.");
        }
        var position = JournalMagic.Length;
        var header = ReadFrame(data, ref position) ?? throw new DatabaseFormatException($"{path} has a corrupt header; refusing to start.");
        var headerReader = new BinaryReader(header.Span);
        var version = (int)headerReader.ReadVarint();
        var layout = StoredLayout.Read(ref headerReader, version, path);

        var records = 0;
        var goodEnd = position;
        while (position < data.Length)
        {
            var frame = ReadFrame(data, ref position);
            if (frame is null)
            {
                break;
            }
            try
            {
                Apply(frame.Value, layout, snapshotGeneration);
            }
            catch (FormatException)
            {
                break;
            }
            records++;
            goodEnd = position;
        }
        var discarded = data.Length - goodEnd;
        if (discarded > 0)
        {
            using var truncate = new FileStream(path, FileMode.Open, FileAccess.Write);
            truncate.SetLength(goodEnd);
            truncate.Flush(flushToDisk: true);
        }
        return (records, discarded);
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

    private void Apply(ReadOnlyMemory<byte> payload, StoredLayout layout, long snapshotGeneration)
    {
        var reader = new BinaryReader(payload.Span);
        var generation = reader.ReadSigned();
        if (generation <= snapshotGeneration || generation <= _database.Snapshot.Generation)
        {
            return;
        }
        var writes = new List<(RowWriteKind Kind, ClassMeta? Class, string Ref, List<(FieldMeta Field, object? Value)>? Values)>();
        var count = reader.ReadCount();
        for (var i = 0; i < count; i++)
        {
            var kind = (RowWriteKind)reader.ReadByte();
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
            writes.Add((kind, cls, reference, values));
        }
        _database.Load(generation, tx =>
        {
            foreach (var (kind, cls, reference, values) in writes)
            {
                if (cls is null || XapiDatabase.IsTransient(cls))
                {
                    continue;
                }
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
        });
    }

    // ---- appending ----

    private void OpenJournalForAppend(string path)
    {
        _journal = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read, 1, FileOptions.None);
        if (_journal.Length == 0)
        {
            WriteJournalHeader();
        }
        else
        {
            _headerBytes = JournalHeaderLength();
        }
        _journal.Seek(0, SeekOrigin.End);
    }

    private void WriteJournalHeader()
    {
        var header = new ArrayBufferWriter<byte>();
        header.Write(JournalMagic);
        var layout = new ArrayBufferWriter<byte>();
        BinaryCodec.WriteVarint(layout, StoredLayout.CurrentVersion);
        StoredLayout.WriteCurrent(layout);
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
        WriteJournalHeader();
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
            (field, value) => DumpValidator.WithoutDanglingReferences(snapshot, field.Type, value));

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

public sealed record JournalLoadReport(long SnapshotGeneration, int SnapshotRows, int JournalRecords, long DiscardedBytes, long Generation, TimeSpan Elapsed);
