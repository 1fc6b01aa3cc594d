using System.Buffers.Binary;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Database.Tests;

/// <summary>
/// Damage that is not a torn tail: a bad record with valid records after it, a missing snapshot,
/// records missing from the middle. The start is refused with the file, offset and what follows,
/// and no file changes; salvaging keeps every valid record and the damaged files.
/// </summary>
public class JournalDamageTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    private string _dir = null!;

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("xapi-damage-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private string JournalPath => Path.Combine(_dir, JournalStore.JournalFile);

    private (XapiDatabase Db, JournalStore Store) Open(bool salvage = false, long compactBytes = 64L << 20)
    {
        var db = new XapiDatabase();
        return (db, JournalStore.Open(db, _dir, NullLogger.Instance, compactBytes, salvage));
    }

    /// <summary>Ten VMs, one record each, left on disk as a crash leaves them (no final compaction).</summary>
    private async Task<List<string>> CrashedJournalWithVmsAsync(int count = 10)
    {
        var (db, store) = Open();
        var refs = new List<string>();
        for (var i = 0; i < count; i++)
        {
            var row = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = $"vm{i}" }));
            await db.WhenVisibleAsync(row.Created);
            refs.Add(row.Ref);
        }
        var bytes = File.ReadAllBytes(JournalPath);
        store.Dispose();
        File.Delete(Path.Combine(_dir, JournalStore.SnapshotFile));
        File.WriteAllBytes(JournalPath, bytes);
        return refs;
    }

    // [u32 length][u32 crc][payload] after the 8-byte magic; the first frame is the header.
    private static List<(int Offset, int Length)> Records(byte[] journal)
    {
        var frames = new List<(int, int)>();
        for (var p = 8; p + 8 <= journal.Length;)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(journal.AsSpan(p));
            frames.Add((p, length));
            p += 8 + length;
        }
        return frames.Skip(1).ToList();
    }

    private Dictionary<string, byte[]> Files() =>
        Directory.GetFiles(_dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);

    private static HashSet<string> Names(XapiDatabase db) => db.Snapshot.All(Vm).Select(r => (string)r[Vm.FieldsByName["name_label"]]!).ToHashSet();

    [Test]
    public async Task A_flipped_byte_in_the_middle_refuses_to_start_with_the_offset_and_what_follows_and_changes_no_file()
    {
        await CrashedJournalWithVmsAsync();
        var bytes = File.ReadAllBytes(JournalPath);
        var damaged = Records(bytes)[4];
        bytes[damaged.Offset + 8 + damaged.Length / 2] ^= 0x01;
        File.WriteAllBytes(JournalPath, bytes);
        var before = Files();

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.Multiple(() =>
        {
            Assert.That(e!.Message, Does.Contain(JournalPath).And.Contain($"offset {damaged.Offset}").And.Contain("5 valid records follow"));
            Assert.That(e.Message, Does.Contain("--salvage-journal"));
            Assert.That(e.Message, Does.Not.Contain("\n"), "one line");
            Assert.That(Files(), Is.EqualTo(before), "no file changed");
        });
    }

    [Test]
    public async Task A_flipped_byte_in_the_first_record_refuses_to_start_rather_than_start_empty()
    {
        await CrashedJournalWithVmsAsync();
        var bytes = File.ReadAllBytes(JournalPath);
        var first = Records(bytes)[0];
        bytes[first.Offset + 9] ^= 0x20;
        File.WriteAllBytes(JournalPath, bytes);
        var before = Files();

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain($"offset {first.Offset}").And.Contain("9 valid records follow"));
        Assert.That(Files(), Is.EqualTo(before));
    }

    [Test]
    public async Task A_damaged_length_field_is_found_past_by_the_checksums_of_the_records_after_it()
    {
        await CrashedJournalWithVmsAsync();
        var bytes = File.ReadAllBytes(JournalPath);
        var damaged = Records(bytes)[3];
        bytes[damaged.Offset + 1] ^= 0x10;
        File.WriteAllBytes(JournalPath, bytes);

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain($"offset {damaged.Offset}").And.Contain("6 valid records follow"));
    }

    [Test]
    public async Task Salvaging_keeps_every_valid_record_and_the_damaged_files_and_the_result_reopens()
    {
        var refs = await CrashedJournalWithVmsAsync();
        // A later record renames the VM whose creation is lost: that write has nothing to apply to.
        var (db0, store0) = Open();
        db0.Write(tx => tx.Set(Vm, refs[4], Vm.FieldsByName["name_label"], "renamed"));
        db0.Write(tx => tx.Set(Vm, refs[9], Vm.FieldsByName["name_label"], "vm9-renamed"));
        await db0.WhenVisibleAsync(db0.CommittedGeneration);
        var bytes = File.ReadAllBytes(JournalPath);
        store0.Dispose();
        File.Delete(Path.Combine(_dir, JournalStore.SnapshotFile));
        var damaged = Records(bytes)[4];
        bytes[damaged.Offset + 8 + damaged.Length / 2] ^= 0x01;
        File.WriteAllBytes(JournalPath, bytes);

        var (db, store) = Open(salvage: true);
        using (store)
        {
            Assert.Multiple(() =>
            {
                Assert.That(Names(db), Is.EquivalentTo(new[] { "vm0", "vm1", "vm2", "vm3", "vm5", "vm6", "vm7", "vm8", "vm9-renamed" }));
                Assert.That(store.LoadReport.SalvagedRecords, Is.EqualTo(7));
                var aside = Directory.GetDirectories(_dir, "damaged-*").Single();
                Assert.That(File.ReadAllBytes(Path.Combine(aside, JournalStore.JournalFile)), Is.EqualTo(bytes), "the damaged journal is kept as it was");
            });
            var later = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = "after salvage" }));
            await db.WhenVisibleAsync(later.Created);
        }
        var (again, reopened) = Open();
        using (reopened)
        {
            Assert.That(Names(again), Does.Contain("vm8").And.Contain("after salvage").And.Count.EqualTo(10));
        }
    }

    [Test]
    public async Task A_missing_snapshot_behind_a_compacted_journal_is_refused_not_started_as_a_new_pool()
    {
        var (db, store) = Open();
        var row = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = "precious" }));
        await db.WhenVisibleAsync(row.Created);
        store.Dispose();
        File.Delete(Path.Combine(_dir, JournalStore.SnapshotFile));
        var before = Files();

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain(JournalStore.SnapshotFile).And.Contain("is missing"));
        Assert.That(Files(), Is.EqualTo(before));
    }

    [Test]
    public async Task A_missing_snapshot_with_journal_records_that_depend_on_it_is_refused()
    {
        var (db, store) = Open(compactBytes: 2048);
        byte[] journal;
        var written = 0;
        do
        {
            // Past compaction into a snapshot, until the journal holds records again: a compaction
            // that has just run leaves it empty for a moment.
            var row = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = $"vm{written}" }));
            await db.WhenVisibleAsync(row.Created);
            written++;
            journal = File.ReadAllBytes(JournalPath);
        }
        while (written < 1000 && (written < 40 || Records(journal).Count == 0));
        store.Dispose();
        File.Delete(Path.Combine(_dir, JournalStore.SnapshotFile));
        File.WriteAllBytes(JournalPath, journal);
        Assert.That(Records(journal), Is.Not.Empty);

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain("is missing"));
    }

    [Test]
    public async Task A_whole_record_missing_from_the_middle_is_refused()
    {
        await CrashedJournalWithVmsAsync();
        var bytes = File.ReadAllBytes(JournalPath);
        var gone = Records(bytes)[5];
        File.WriteAllBytes(JournalPath, [.. bytes[..gone.Offset], .. bytes[(gone.Offset + 8 + gone.Length)..]]);

        var e = Assert.Throws<DatabaseFormatException>(() => Open());
        Assert.That(e!.Message, Does.Contain("generation").And.Contain("holes"));
    }

    [Test]
    public async Task A_journal_header_torn_while_compaction_rewrote_it_starts_from_the_snapshot()
    {
        var (db, store) = Open();
        var row = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = "in the snapshot" }));
        await db.WhenVisibleAsync(row.Created);
        store.Dispose();
        File.WriteAllBytes(JournalPath, File.ReadAllBytes(JournalPath)[..5]);

        byte[] crashedJournal;
        var (reopened, second) = Open();
        using (second)
        {
            Assert.That(Names(reopened), Is.EquivalentTo(new[] { "in the snapshot" }));
            var later = reopened.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = "after" }));
            await reopened.WhenVisibleAsync(later.Created);
            crashedJournal = File.ReadAllBytes(JournalPath);
        }
        // A crash now: the journal written after the torn header must hold the later write.
        File.WriteAllBytes(JournalPath, crashedJournal);
        var (again, third) = Open();
        using (third)
        {
            Assert.That(Names(again), Is.EquivalentTo(new[] { "in the snapshot", "after" }));
        }
    }
}
