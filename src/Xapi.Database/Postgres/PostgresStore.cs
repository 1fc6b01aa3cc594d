using System.Buffers;
using Microsoft.Extensions.Logging;
using Npgsql;
using NpgsqlTypes;
using Polly;
using Polly.Retry;
using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Database.Postgres;

/// <summary>
/// The pool database in PostgreSQL: the in-memory tables stay the read path, and every
/// committed transaction is written through (a batch of waiting transactions per database
/// transaction) before readers see it. Transient failures are retried with jittered backoff;
/// while the database stays away, writes wait and callers are told, and nothing acknowledged
/// is ever dropped. One daemon at a time is master: it holds an advisory lock, and a second
/// one waits for it and takes over when the first dies.
/// </summary>
public sealed class PostgresStore : IDurableLog, IDisposable
{
    private const long MasterLockKey = 0x58415049_4D535452; // "XAPIMSTR"

    private readonly XapiDatabase _database;
    private readonly NpgsqlDataSource _dataSource;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline _retry;
    private readonly object _queueLock = new();
    private readonly Thread _writer;
    private List<(DbSnapshot Snapshot, IReadOnlyList<RowWrite> Writes)> _queue = [];
    private NpgsqlConnection? _lockConnection;
    private bool _stopping;
    private bool _writerStarted;
    private volatile string? _unavailable;

    private PostgresStore(XapiDatabase database, NpgsqlDataSource dataSource, ILogger logger)
    {
        _database = database;
        _dataSource = dataSource;
        _logger = logger;
        _retry = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<NpgsqlException>(e => e.IsTransient).Handle<TimeoutException>(),
                MaxRetryAttempts = 4,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(100),
                MaxDelay = TimeSpan.FromSeconds(2),
            })
            .Build();
        _writer = new Thread(WriteLoop) { IsBackground = true, Name = "postgres writer" };
    }

    /// <summary>Why writes cannot be made durable right now; null while the database answers.</summary>
    public string? Unavailable => _unavailable;

    public long LoadedGeneration { get; private set; }

    public int LoadedRows { get; private set; }

    /// <summary>
    /// Becomes master of the pool database at <paramref name="connectionString"/> (waiting while
    /// another daemon is), creates or migrates its tables, loads it, and writes through from then on.
    /// </summary>
    public static async Task<PostgresStore> OpenAsync(XapiDatabase database, string connectionString, ILogger logger, CancellationToken cancellationToken = default)
    {
        var store = Standby(database, connectionString, logger);
        await store.AcquireMasterLockAsync(cancellationToken).ConfigureAwait(false);
        await store.OpenAsMasterAsync(cancellationToken).ConfigureAwait(false);
        return store;
    }

    /// <summary>
    /// The pool database at <paramref name="connectionString"/>, not yet written: a pool member keeps
    /// one to take the pool over when its master dies (<see cref="TryLockAsync"/>, <see cref="TakeOverAsync"/>).
    /// </summary>
    public static PostgresStore Standby(XapiDatabase database, string connectionString, ILogger logger) =>
        new(database, NpgsqlDataSource.Create(connectionString), logger);

    /// <summary>With the master's lock held: creates or migrates the tables, loads them, and writes through from then on.</summary>
    public async Task OpenAsMasterAsync(CancellationToken cancellationToken = default)
    {
        await MigrateAsync(cancellationToken).ConfigureAwait(false);
        await LoadAsync(cancellationToken).ConfigureAwait(false);
        _database.AttachLog(this);
        StartWriter();
    }

    /// <summary>
    /// Takes the master's lock if no daemon holds it: the lock is a PostgreSQL session's, so a master
    /// that died (whatever killed it) has let go of it as soon as its connection closed.
    /// </summary>
    public async Task<bool> TryLockAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            _lockConnection ??= await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var tryLock = TryLockCommand(_lockConnection);
            return (bool)(await tryLock.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }
        catch (NpgsqlException)
        {
            // A session the server dropped (it restarted, or another took its place): the next try opens a new one.
            _lockConnection?.Dispose();
            _lockConnection = null;
            throw;
        }
    }

    private static NpgsqlCommand TryLockCommand(NpgsqlConnection connection)
    {
        var command = new NpgsqlCommand("SELECT pg_try_advisory_lock(@key)", connection);
        command.Parameters.AddWithValue("key", MasterLockKey);
        return command;
    }

    /// <summary>The address of the host the stored pool names its master; null when there is no pool yet.</summary>
    public async Task<string?> MasterAddressAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var query = new NpgsqlCommand("SELECT h.\"address\" FROM \"pool\" p JOIN \"host\" h ON h._ref = p.\"master\" LIMIT 1", connection);
        try
        {
            return await query.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string;
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            return null;
        }
    }

    /// <summary>
    /// A member takes the pool over, with the lock held: the stored pool database (every write the
    /// old master acknowledged is in it) replaces the member's copy, keeping its sessions and
    /// tasks, and writes go through to PostgreSQL from then on.
    /// </summary>
    public async Task TakeOverAsync(CancellationToken cancellationToken = default)
    {
        var (_, rows, _) = await ReadAsync(cancellationToken).ConfigureAwait(false);
        var snapshot = _database.Snapshot;
        var whole = rows.Select(r => new Replication.ReplicaRow(r.Class, r.Ref, r.Values))
            .Concat(ApiSchema.Classes.Where(XapiDatabase.IsTransient).SelectMany(cls => snapshot.All(cls).Select(row => new Replication.ReplicaRow(cls, row.Ref, [.. row.Values]))))
            .ToList();
        _database.TakeOver(new Replication.ReplicaDelta(XapiDatabase.NewUuid(), 0, 1, Full: true, whole, []), this);
        StartWriter();
        _logger.LogWarning("Took the pool over from PostgreSQL: {Rows} stored rows", rows.Count);
    }

    /// <summary>The stored pool database into an empty database, without writing it back (a member's copy to start from).</summary>
    public Task LoadCopyAsync(CancellationToken cancellationToken = default) => LoadAsync(cancellationToken);

    private void StartWriter()
    {
        _writerStarted = true;
        _writer.Start();
    }

    /// <summary>Takes the master's lock, waiting while another daemon holds it (a standby of the master's own host).</summary>
    public async Task AcquireMasterLockAsync(CancellationToken cancellationToken = default)
    {
        if (await TryLockAsync(cancellationToken).ConfigureAwait(false))
        {
            return;
        }
        _logger.LogWarning("Another daemon is master of this pool database; waiting to take over when it stops");
        await using var waitLock = new NpgsqlCommand("SELECT pg_advisory_lock(@key)", _lockConnection) { CommandTimeout = 0 };
        waitLock.Parameters.AddWithValue("key", MasterLockKey);
        await waitLock.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        _logger.LogWarning("Took over as master of the pool database");
    }

    private async Task MigrateAsync(CancellationToken cancellationToken)
    {
        using var stream = typeof(PostgresStore).Assembly.GetManifestResourceStream("Xapi.Database.Postgres.Schema.sql")!;
        using var reader = new StreamReader(stream);
        var ddl = await reader.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(ddl, connection);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        await using var version = new NpgsqlCommand(
            "INSERT INTO xapi_meta (key, value) VALUES ('format', @v) ON CONFLICT (key) DO NOTHING; SELECT value FROM xapi_meta WHERE key = 'format'", connection);
        version.Parameters.AddWithValue("v", StoredLayout.CurrentVersion.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var text = (string)(await version.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var stored))
        {
            throw new DatabaseFormatException(
                $"the PostgreSQL pool database's xapi_meta 'format' is '{text}', not a format number; refusing to start. Restore the database from a backup.");
        }
        if (stored > StoredLayout.CurrentVersion)
        {
            throw new DatabaseFormatException(
                $"the PostgreSQL pool database is in format {stored}, newer than this daemon's format {StoredLayout.CurrentVersion}: upgrade xapi-dotnet to open it");
        }
    }

    private static IEnumerable<ClassMeta> StoredClasses => ApiSchema.Classes.Where(c => c.IsStored && !XapiDatabase.IsTransient(c));

    private async Task LoadAsync(CancellationToken cancellationToken)
    {
        try
        {
            await LoadRowsAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UndefinedColumn or PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.DatatypeMismatch)
        {
            throw new DatabaseFormatException(
                $"the PostgreSQL pool database's tables do not match this daemon's schema ({e.MessageText}); refusing to start. Restore the database from a backup.", e);
        }
    }

    private async Task LoadRowsAsync(CancellationToken cancellationToken)
    {
        var (generation, rows, tombstones) = await ReadAsync(cancellationToken).ConfigureAwait(false);
        if (generation > 0)
        {
            _database.Load(generation, tx =>
            {
                foreach (var (cls, reference, values, created, modified) in rows)
                {
                    tx.Restore(cls, reference, values, created, modified);
                }
                foreach (var tombstone in tombstones.TakeLast(_database.TombstoneLimit))
                {
                    tx.RestoreTombstone(tombstone);
                }
            });
        }
        LoadedGeneration = generation;
        LoadedRows = rows.Count;
        _logger.LogInformation("Loaded the pool database from PostgreSQL: {Rows} rows at generation {Generation}", rows.Count, generation);
    }

    private async Task<(long Generation, List<(ClassMeta Class, string Ref, object?[] Values, long Created, long Modified)> Rows, List<Tombstone> Tombstones)> ReadAsync(
        CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var generationCommand = new NpgsqlCommand("SELECT value FROM xapi_meta WHERE key = 'generation'", connection);
        long generation = 0;
        if (await generationCommand.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is string text
            && (!long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out generation) || generation < 0))
        {
            throw new DatabaseFormatException(
                $"the PostgreSQL pool database's xapi_meta 'generation' is '{text}', not a generation; refusing to start. Restore the database from a backup.");
        }
        var rows = new List<(ClassMeta Class, string Ref, object?[] Values, long Created, long Modified)>();
        foreach (var cls in StoredClasses)
        {
            var columns = string.Join(", ", cls.Fields.Select(f => $"\"{f.Name}\""));
            await using var select = new NpgsqlCommand($"SELECT _ref, _created, _modified, {columns} FROM \"{cls.Name}\"", connection);
            await using var reader = await select.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var reference = reader.GetString(0);
                var values = new object?[cls.Fields.Count];
                for (var i = 0; i < values.Length; i++)
                {
                    try
                    {
                        values[i] = reader.IsDBNull(i + 3) ? cls.Fields[i].DefaultValue : FromColumn(cls.Fields[i], reader.GetValue(i + 3));
                    }
                    catch (Exception e) when (e is FormatException or InvalidCastException)
                    {
                        // Served as it is, the value would fail every call that reads it with INTERNAL_ERROR.
                        throw new DatabaseFormatException(
                            $"the PostgreSQL pool database holds a malformed value in table \"{cls.Name}\", row {reference}, column \"{cls.Fields[i].Name}\" ({e.Message}); refusing to start. Correct or delete that row, or restore the database from a backup.", e);
                    }
                }
                rows.Add((cls, reference, values, reader.GetInt64(1), reader.GetInt64(2)));
            }
        }
        var tombstones = new List<Tombstone>();
        await using (var select = new NpgsqlCommand("SELECT class, ref, created, deleted, uuid FROM xapi_tombstones ORDER BY deleted", connection))
        await using (var reader = await select.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                if (ApiSchema.ClassesByName.TryGetValue(reader.GetString(0), out var cls))
                {
                    tombstones.Add(new Tombstone(cls, reader.GetString(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetString(4)));
                }
            }
        }
        return (generation, rows, tombstones);
    }

    // The column must hold what the field's type stores (a column altered by hand may not).
    private static object? FromColumn(FieldMeta field, object value) => field.Type.Kind switch
    {
        XTypeKind.DateTime => DateTime.SpecifyKind(As<DateTime>(value, "timestamptz"), DateTimeKind.Utc),
        XTypeKind.Set or XTypeKind.Map or XTypeKind.Record or XTypeKind.Option => DecodeValue(As<byte[]>(value, "bytea")),
        XTypeKind.String or XTypeKind.Enum or XTypeKind.Ref => As<string>(value, "text"),
        XTypeKind.Int => As<long>(value, "bigint"),
        XTypeKind.Float => As<double>(value, "double precision"),
        XTypeKind.Bool => As<bool>(value, "boolean"),
        _ => value,
    };

    private static T As<T>(object value, string column) =>
        value is T typed ? typed : throw new InvalidCastException($"the column holds {value.GetType().Name}, not {column}");

    private static object? DecodeValue(byte[] bytes)
    {
        var reader = new Persistence.BinaryReader(bytes);
        var value = reader.ReadValue();
        return reader.AtEnd ? value : throw new FormatException("bytes after the value");
    }

    private static object ToColumn(FieldMeta field, object? value)
    {
        switch (field.Type.Kind)
        {
            case XTypeKind.Set or XTypeKind.Map or XTypeKind.Record or XTypeKind.Option:
                var buffer = new ArrayBufferWriter<byte>();
                BinaryCodec.WriteValue(buffer, value);
                return buffer.WrittenSpan.ToArray();
            default:
                return value ?? DBNull.Value;
        }
    }

    public void Append(DbSnapshot committed, IReadOnlyList<RowWrite> writes)
    {
        lock (_queueLock)
        {
            _queue.Add((committed, writes));
            Monitor.Pulse(_queueLock);
        }
    }

    private void WriteLoop()
    {
        var pending = new List<(DbSnapshot Snapshot, IReadOnlyList<RowWrite> Writes)>();
        var backoff = TimeSpan.FromMilliseconds(250);
        while (true)
        {
            lock (_queueLock)
            {
                while (_queue.Count == 0 && pending.Count == 0 && !_stopping)
                {
                    Monitor.Wait(_queueLock);
                }
                if (_queue.Count == 0 && pending.Count == 0 && _stopping)
                {
                    return;
                }
                pending.AddRange(_queue);
                _queue = [];
            }
            try
            {
                _retry.Execute(() => WriteBatch(pending));
                _database.MarkDurable(pending[^1].Snapshot);
                pending.Clear();
                if (_unavailable is not null)
                {
                    _logger.LogWarning("The pool database is reachable again; queued writes are stored");
                    RetakeLock();
                }
                _unavailable = null;
                backoff = TimeSpan.FromMilliseconds(250);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException or InvalidOperationException)
            {
                // Keep the batch and try again: nothing committed may be dropped. Callers waiting
                // for it are told the database is unreachable.
                if (_unavailable is null)
                {
                    _logger.LogError("The pool database is unreachable ({Reason}); holding {Count} writes until it returns", e.Message, pending.Count);
                }
                _unavailable = e.Message;
                if (_stopping)
                {
                    return;
                }
                Thread.Sleep(backoff);
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
            }
        }
    }

    /// <summary>
    /// After an outage the master's lock may be gone with its session (the server restarted, or a
    /// replica was promoted in its place): it is taken again on the server that answers now, so
    /// no other daemon can become master beside this one.
    /// </summary>
    private void RetakeLock()
    {
        if (_lockConnection is { FullState: System.Data.ConnectionState.Open } held)
        {
            try
            {
                using var probe = new NpgsqlCommand("SELECT 1", held);
                probe.ExecuteScalar();
                return;
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
            {
                // The session died with the server: the lock with it.
            }
        }
        try
        {
            _lockConnection?.Dispose();
            _lockConnection = _dataSource.OpenConnection();
            using var tryLock = TryLockCommand(_lockConnection);
            if ((bool)tryLock.ExecuteScalar()!)
            {
                _logger.LogWarning("Took the pool database's master lock again after the outage");
            }
            else
            {
                _logger.LogCritical("Another daemon holds the pool database's master lock after the outage; this daemon's writes may race with it");
            }
        }
        catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
        {
            _logger.LogError("Could not take the pool database's master lock again ({Reason}); trying after the next write", e.Message);
            _lockConnection = null;
        }
    }

    private void WriteBatch(List<(DbSnapshot Snapshot, IReadOnlyList<RowWrite> Writes)> batch)
    {
        using var connection = _dataSource.OpenConnection();
        using var transaction = connection.BeginTransaction();
        using var npgsqlBatch = new NpgsqlBatch(connection, transaction);
        foreach (var (snapshot, writes) in batch)
        {
            foreach (var write in writes)
            {
                if (XapiDatabase.IsTransient(write.Class))
                {
                    continue;
                }
                npgsqlBatch.BatchCommands.Add(Command(snapshot, write));
            }
        }
        var last = batch[^1].Snapshot.Generation;
        var meta = new NpgsqlBatchCommand("INSERT INTO xapi_meta (key, value) VALUES ('generation', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value");
        meta.Parameters.Add(new NpgsqlParameter { Value = last.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        npgsqlBatch.BatchCommands.Add(meta);
        npgsqlBatch.ExecuteNonQuery();
        transaction.Commit();
    }

    private static NpgsqlBatchCommand Command(DbSnapshot snapshot, RowWrite write)
    {
        var cls = write.Class;
        switch (write.Kind)
        {
            case RowWriteKind.Create:
            {
                var row = snapshot.TryGet(cls, write.Ref, out var r) ? r : null;
                if (row is null)
                {
                    // Created and deleted within one transaction: nothing to store.
                    return new NpgsqlBatchCommand("SELECT 1");
                }
                var columns = string.Join(", ", cls.Fields.Select(f => $"\"{f.Name}\""));
                var parameters = string.Join(", ", cls.Fields.Select((_, i) => $"${i + 4}"));
                var command = new NpgsqlBatchCommand(
                    $"INSERT INTO \"{cls.Name}\" (_ref, _created, _modified, {columns}) VALUES ($1, $2, $3, {parameters}) ON CONFLICT (_ref) DO NOTHING");
                command.Parameters.Add(new NpgsqlParameter { Value = row.Ref });
                command.Parameters.Add(new NpgsqlParameter { Value = row.Created });
                command.Parameters.Add(new NpgsqlParameter { Value = row.Modified });
                foreach (var field in cls.Fields)
                {
                    command.Parameters.Add(Parameter(field, row.Values[field.Ordinal]));
                }
                return command;
            }
            case RowWriteKind.Update or RowWriteKind.Touch:
            {
                if (!snapshot.TryGet(cls, write.Ref, out var row))
                {
                    return new NpgsqlBatchCommand("SELECT 1");
                }
                var fields = write.Kind == RowWriteKind.Update ? write.ChangedFields!.Select(i => cls.Fields[i]).ToList() : [];
                var sets = string.Concat(fields.Select((f, i) => $", \"{f.Name}\" = ${i + 3}"));
                var command = new NpgsqlBatchCommand($"UPDATE \"{cls.Name}\" SET _modified = $2{sets} WHERE _ref = $1");
                command.Parameters.Add(new NpgsqlParameter { Value = row.Ref });
                command.Parameters.Add(new NpgsqlParameter { Value = row.Modified });
                foreach (var field in fields)
                {
                    command.Parameters.Add(Parameter(field, row.Values[field.Ordinal]));
                }
                return command;
            }
            default:
            {
                // The delete and its tombstone (what event readers learn it from) go together.
                var tombstone = snapshot.Tombstones.LastOrDefault(t => t.Ref == write.Ref && t.Class == cls);
                var command = new NpgsqlBatchCommand(
                    $"WITH gone AS (DELETE FROM \"{cls.Name}\" WHERE _ref = $1) INSERT INTO xapi_tombstones (deleted, class, ref, created, uuid) VALUES ($2, $3, $1, $4, $5)");
                command.Parameters.Add(new NpgsqlParameter { Value = write.Ref });
                command.Parameters.Add(new NpgsqlParameter { Value = tombstone?.Deleted ?? snapshot.Generation });
                command.Parameters.Add(new NpgsqlParameter { Value = cls.Name });
                command.Parameters.Add(new NpgsqlParameter { Value = tombstone?.Created ?? 0L });
                command.Parameters.Add(new NpgsqlParameter { Value = tombstone?.Uuid ?? "" });
                return command;
            }
        }
    }

    private static NpgsqlParameter Parameter(FieldMeta field, object? value) => new()
    {
        Value = ToColumn(field, value),
        NpgsqlDbType = field.Type.Kind switch
        {
            XTypeKind.String or XTypeKind.Enum or XTypeKind.Ref => NpgsqlDbType.Text,
            XTypeKind.Int => NpgsqlDbType.Bigint,
            XTypeKind.Float => NpgsqlDbType.Double,
            XTypeKind.Bool => NpgsqlDbType.Boolean,
            XTypeKind.DateTime => NpgsqlDbType.TimestampTz,
            _ => NpgsqlDbType.Bytea,
        },
    };

    public void Dispose()
    {
        lock (_queueLock)
        {
            _stopping = true;
            Monitor.Pulse(_queueLock);
        }
        if (_writerStarted)
        {
            _writer.Join();
        }
        _lockConnection?.Dispose();
        _dataSource.Dispose();
    }
}
