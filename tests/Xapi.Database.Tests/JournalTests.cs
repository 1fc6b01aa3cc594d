using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Database.Tests;

public class JournalTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");
    private static readonly FieldMeta NameLabel = Vm.FieldsByName["name_label"];

    private string _dir = null!;

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("xapi-journal-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private sealed class CapturingLogger : ILogger
    {
        public List<string> Messages { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Messages.Add($"{logLevel}: {formatter(state, exception)}");
    }

    private (XapiDatabase Db, JournalStore Store) Open(string? dir = null, ILogger? logger = null, long compactBytes = 64L << 20)
    {
        var db = new XapiDatabase();
        var store = JournalStore.Open(db, dir ?? _dir, logger ?? new CapturingLogger(), compactBytes);
        return (db, store);
    }

    private static async Task<Row> CreateVmAsync(XapiDatabase db, string name)
    {
        var row = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = name, ["other_config"] = ValueMap.FromPairs([new("k", "v")]) }));
        await db.WhenVisibleAsync(row.Created);
        return row;
    }

    // A crash: the files as they are on disk while the daemon still runs, opened by a new one.
    private string CopyOfFiles()
    {
        var copy = Directory.CreateTempSubdirectory("xapi-journal-crash-").FullName;
        foreach (var file in Directory.GetFiles(_dir))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }
        return copy;
    }

    [Test]
    public async Task Durable_writes_survive_a_crash_with_their_generations()
    {
        var (db, store) = Open();
        var a = await CreateVmAsync(db, "a");
        var b = await CreateVmAsync(db, "b");
        db.Write(tx => tx.Set(Vm, a.Ref, NameLabel, "a2"));
        db.Write(tx => tx.Delete(Vm, b.Ref));
        await db.WhenVisibleAsync(db.CommittedGeneration);
        var generation = db.Snapshot.Generation;
        var crashed = CopyOfFiles();
        store.Dispose();

        var (reopened, second) = Open(crashed);
        using (second)
        {
            var row = reopened.Snapshot.Get(Vm, a.Ref);
            Assert.Multiple(() =>
            {
                Assert.That(row[NameLabel], Is.EqualTo("a2"));
                Assert.That(((ValueMap)row[Vm.FieldsByName["other_config"]]!)["k"], Is.EqualTo("v"));
                Assert.That(row.Created, Is.EqualTo(a.Created));
                Assert.That(row.Modified, Is.EqualTo(generation - 1));
                Assert.That(reopened.Snapshot.Exists(Vm, b.Ref), Is.False);
                Assert.That(reopened.Snapshot.Generation, Is.EqualTo(generation));
                Assert.That(reopened.Snapshot.Tombstones.Select(t => t.Ref), Does.Contain(b.Ref), "deletes stay visible to event readers");
                Assert.That(reopened.Snapshot.GetByUuid(Vm, row.Uuid).Ref, Is.EqualTo(a.Ref));
                Assert.That(second.LoadReport.JournalRecords, Is.EqualTo(4));
            });
        }
        Directory.Delete(crashed, recursive: true);
    }

    [Test]
    public async Task Sessions_and_tasks_are_not_kept_but_their_generations_are()
    {
        var (db, store) = Open();
        var session = db.Write(tx => tx.Create(ApiSchema.Class("session"), new Dictionary<string, object?>()));
        var vm = await CreateVmAsync(db, "kept");
        store.Dispose();
        var (reopened, second) = Open();
        using (second)
        {
            Assert.Multiple(() =>
            {
                Assert.That(reopened.Snapshot.Exists(ApiSchema.Class("session"), session.Ref), Is.False);
                Assert.That(reopened.Snapshot.Exists(Vm, vm.Ref), Is.True);
                Assert.That(reopened.Snapshot.Generation, Is.EqualTo(vm.Created));
            });
        }
    }

    [Test]
    public async Task Compaction_writes_a_snapshot_and_restarts_the_journal()
    {
        var (db, store) = Open(compactBytes: 4096);
        var rows = new List<Row>();
        for (var i = 0; i < 40; i++)
        {
            rows.Add(await CreateVmAsync(db, $"vm{i}"));
        }
        Assert.Multiple(() =>
        {
            Assert.That(File.Exists(Path.Combine(_dir, JournalStore.SnapshotFile)), Is.True);
            Assert.That(store.JournalBytes, Is.LessThan(4096 + 1024), "records since the last compaction only");
        });
        var crashed = CopyOfFiles();
        store.Dispose();
        var (reopened, second) = Open(crashed);
        using (second)
        {
            Assert.Multiple(() =>
            {
                Assert.That(reopened.Snapshot.Count(Vm), Is.EqualTo(40));
                Assert.That(second.LoadReport.SnapshotRows, Is.GreaterThan(0));
                Assert.That(reopened.Snapshot.Generation, Is.EqualTo(rows[^1].Created));
            });
        }
        Directory.Delete(crashed, recursive: true);
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(40)]
    public async Task A_torn_journal_tail_is_recovered_up_to_the_last_whole_record_and_reported(int cut)
    {
        var (db, store) = Open();
        await CreateVmAsync(db, "first");
        var last = await CreateVmAsync(db, "second");
        var crashed = CopyOfFiles();
        store.Dispose();
        var journal = Path.Combine(crashed, JournalStore.JournalFile);
        var bytes = File.ReadAllBytes(journal);
        File.WriteAllBytes(journal, bytes[..^cut]);

        var logger = new CapturingLogger();
        var (reopened, second) = Open(crashed, logger);
        using (second)
        {
            Assert.Multiple(() =>
            {
                Assert.That(reopened.Snapshot.Count(Vm), Is.EqualTo(1));
                Assert.That(reopened.Snapshot.Exists(Vm, last.Ref), Is.False);
                Assert.That(second.LoadReport.DiscardedBytes, Is.GreaterThan(0));
                Assert.That(logger.Messages, Has.Some.Contains("torn or corrupt tail"));
            });
        }
        // The torn bytes are gone, so new records follow the last whole one.
        var (again, third) = Open(crashed);
        using (third)
        {
            Assert.That(third.LoadReport.DiscardedBytes, Is.Zero);
            Assert.That(again.Snapshot.Count(Vm), Is.EqualTo(1));
        }
        Directory.Delete(crashed, recursive: true);
    }

    [Test]
    public async Task A_corrupt_record_in_the_tail_is_dropped_with_everything_after_it()
    {
        var (db, store) = Open();
        await CreateVmAsync(db, "first");
        await CreateVmAsync(db, "second");
        var crashed = CopyOfFiles();
        store.Dispose();
        var journal = Path.Combine(crashed, JournalStore.JournalFile);
        var bytes = File.ReadAllBytes(journal);
        bytes[^5] ^= 0xFF;
        File.WriteAllBytes(journal, bytes);
        var (reopened, second) = Open(crashed);
        using (second)
        {
            Assert.That(reopened.Snapshot.Count(Vm), Is.EqualTo(1));
        }
        Directory.Delete(crashed, recursive: true);
    }

    [Test]
    public async Task A_corrupt_snapshot_is_refused_not_emptied()
    {
        var (db, store) = Open();
        await CreateVmAsync(db, "precious");
        store.Dispose();
        var snapshot = Path.Combine(_dir, JournalStore.SnapshotFile);
        var bytes = File.ReadAllBytes(snapshot);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(snapshot, bytes);
        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain("corrupt").And.Contain("refusing to start"));
        Assert.That(File.ReadAllBytes(snapshot), Is.EqualTo(bytes), "the damaged file is left for recovery");
    }

    private static byte[] HandWrittenSnapshot(int version, Action<IBufferWriter<byte>> layoutAndRows)
    {
        var output = new ArrayBufferWriter<byte>();
        output.Write("XAPISNAP"u8);
        BinaryCodec.WriteVarint(output, (ulong)version);
        BinaryCodec.WriteSigned(output, 42);
        layoutAndRows(output);
        var crc = Crc32C.Compute(output.WrittenSpan);
        BinaryPrimitives.WriteUInt32LittleEndian(output.GetSpan(4), crc);
        output.Advance(4);
        return output.WrittenSpan.ToArray();
    }

    [Test]
    public void A_snapshot_from_a_newer_format_is_refused_with_a_clear_message()
    {
        File.WriteAllBytes(Path.Combine(_dir, JournalStore.SnapshotFile),
            HandWrittenSnapshot(StoredLayout.CurrentVersion + 1, StoredLayout.WriteCurrent));
        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain("newer than this daemon's format").And.Contain("upgrade xapi-dotnet"));
    }

    [Test]
    public void An_older_layout_is_upgraded_on_load()
    {
        // An older schema: VM had only uuid, name_label and a field since removed.
        File.WriteAllBytes(Path.Combine(_dir, JournalStore.SnapshotFile), HandWrittenSnapshot(0, output =>
        {
            BinaryCodec.WriteVarint(output, 1);
            BinaryCodec.WriteString(output, "VM");
            BinaryCodec.WriteVarint(output, 3);
            BinaryCodec.WriteString(output, "uuid");
            BinaryCodec.WriteString(output, "name_label");
            BinaryCodec.WriteString(output, "retired_field");
            BinaryCodec.WriteVarint(output, 0); // tombstones
            BinaryCodec.WriteVarint(output, 1); // rows
            BinaryCodec.WriteString(output, "OpaqueRef:old");
            BinaryCodec.WriteSigned(output, 5);
            BinaryCodec.WriteSigned(output, 40);
            BinaryCodec.WriteValue(output, "0ld-uuid");
            BinaryCodec.WriteValue(output, "from an old release");
            BinaryCodec.WriteValue(output, 123L);
        }));
        var (db, store) = Open();
        using (store)
        {
            var row = db.Snapshot.Get(new VMRef("OpaqueRef:old"));
            Assert.Multiple(() =>
            {
                Assert.That(row.NameLabel, Is.EqualTo("from an old release"));
                Assert.That(row.Uuid, Is.EqualTo("0ld-uuid"));
                Assert.That(row.PowerState, Is.EqualTo(VmPowerState.Halted), "fields the old layout lacked take their defaults");
                Assert.That(db.Snapshot.Generation, Is.EqualTo(42));
            });
        }
    }

    [Test]
    public async Task Concurrent_writers_share_fsyncs()
    {
        var (db, store) = Open();
        using (store)
        {
            var tasks = Enumerable.Range(0, 64).Select(i => Task.Run(async () =>
            {
                for (var j = 0; j < 20; j++)
                {
                    await CreateVmAsync(db, $"w{i}-{j}");
                }
            }));
            await Task.WhenAll(tasks);
            Assert.That(db.Snapshot.Count(Vm), Is.EqualTo(64 * 20));
        }
    }
}
