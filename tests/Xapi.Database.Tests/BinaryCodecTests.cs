using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Database.Persistence;
using Xapi.Model;

namespace Xapi.Database.Tests;

public class BinaryCodecTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    // depth one-element sets around a null, as the encoder would write them.
    private static byte[] NestedSets(int depth) =>
        Enumerable.Repeat(new byte[] { 7, 1 }, depth).SelectMany(b => b).Append((byte)0).ToArray();

    private static object? Read(byte[] data) => new Persistence.BinaryReader(data).ReadValue();

    [Test]
    public void Values_nested_to_the_limit_are_read_and_deeper_ones_refused_without_recursing_off_the_stack()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Read(NestedSets(BinaryCodec.MaxDepth)), Is.InstanceOf<object?[]>());
            Assert.That(() => Read(NestedSets(BinaryCodec.MaxDepth + 1)),
                Throws.TypeOf<FormatException>().With.Message.Contain($"nested deeper than {BinaryCodec.MaxDepth}"));
            Assert.That(() => Read(NestedSets(400_000)), Throws.TypeOf<FormatException>());
        });
    }

    [Test]
    public void The_encoder_refuses_a_value_deeper_than_the_reader_would_take()
    {
        object? value = null;
        for (var i = 0; i <= BinaryCodec.MaxDepth + 1; i++)
        {
            value = new object?[] { value };
        }
        Assert.That(() => BinaryCodec.WriteValue(new ArrayBufferWriter<byte>(), value), Throws.InvalidOperationException);
    }

    [Test]
    public void Every_datamodel_type_nests_well_within_the_limit()
    {
        static int Depth(XType type) => type.Kind switch
        {
            XTypeKind.Set or XTypeKind.Option => 1 + Depth(type.Element!),
            XTypeKind.Map => 1 + Math.Max(Depth(type.Key!), Depth(type.Element!)),
            _ => 0,
        };
        var deepest = ApiSchema.Classes.SelectMany(c => c.Fields).Max(f => Depth(f.Type));
        Assert.That(deepest, Is.LessThan(BinaryCodec.MaxDepth / 4));
    }

    [Test]
    public void A_date_out_of_range_is_a_format_error()
    {
        var bytes = new ArrayBufferWriter<byte>();
        bytes.Write<byte>([6]);
        BinaryCodec.WriteSigned(bytes, long.MaxValue);
        Assert.That(() => Read(bytes.WrittenSpan.ToArray()), Throws.TypeOf<FormatException>().With.Message.Contain("date"));
    }

    [Test]
    public void A_map_claiming_more_entries_than_it_has_distinct_keys_does_not_reserve_memory_for_the_claim()
    {
        // 2,000,000 entries of one repeated key: the count is honest about the bytes, not the keys.
        const int count = 2_000_000;
        var bytes = new ArrayBufferWriter<byte>();
        bytes.Write<byte>([8]);
        BinaryCodec.WriteVarint(bytes, count);
        for (var i = 0; i < count; i++)
        {
            bytes.Write<byte>([4, 0]);
        }
        var data = bytes.WrittenSpan.ToArray();
        // The decoder's first run on a thread pays for its one-time set-up (type initialisers, tiered code): not what is measured.
        Read(data);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var map = (ValueMap)Read(data)!;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Multiple(() =>
        {
            Assert.That(map.Count, Is.EqualTo(1));
            Assert.That(allocated, Is.LessThan(64 * 1024), "bytes allocated decoding it");
        });
    }

    [Test]
    public void A_snapshot_holding_a_date_out_of_range_is_refused_as_a_database_format_error()
    {
        var row = new object?[Vm.Fields.Count];
        for (var i = 0; i < row.Length; i++)
        {
            row[i] = Vm.Fields[i].DefaultValue;
        }
        var marker = new DateTime(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc);
        row[Vm.FieldsByName["snapshot_time"].Ordinal] = marker;
        var dump = new DatabaseDump { Generation = 1 };
        dump.Rows.Add(new DatabaseDump.DumpRow(Vm, "OpaqueRef:" + Guid.NewGuid(), row, 1, 1));
        var bytes = JournalStore.EncodeDump(dump).WrittenSpan.ToArray();

        // The date's ticks are replaced by ones past DateTime.MaxValue, of the same varint length.
        var ticks = new ArrayBufferWriter<byte>();
        BinaryCodec.WriteSigned(ticks, marker.Ticks);
        var at = bytes.AsSpan().IndexOf((ReadOnlySpan<byte>)[6, .. ticks.WrittenSpan]);
        Assert.That(at, Is.GreaterThan(0));
        var tooLate = new ArrayBufferWriter<byte>();
        BinaryCodec.WriteSigned(tooLate, DateTime.MaxValue.Ticks + (1L << 60));
        Assert.That(tooLate.WrittenCount, Is.EqualTo(ticks.WrittenCount));
        tooLate.WrittenSpan.CopyTo(bytes.AsSpan(at + 1));
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(bytes.Length - 4), Crc32C.Compute(bytes.AsSpan(0, bytes.Length - 4)));

        Assert.That(() => JournalStore.ReadSnapshot(bytes, "dump"),
            Throws.TypeOf<DatabaseFormatException>().With.Message.Contain("date out of range"));
    }

    [Test]
    public void A_journal_record_holding_a_deeply_nested_value_does_not_crash_the_load()
    {
        var dir = Directory.CreateTempSubdirectory("xapi-codec-").FullName;
        try
        {
            var journal = new ArrayBufferWriter<byte>();
            journal.Write("XAPIJRNL"u8);
            var header = new ArrayBufferWriter<byte>();
            BinaryCodec.WriteVarint(header, StoredLayout.CurrentVersion);
            StoredLayout.WriteCurrent(header);
            Frame(journal, header.WrittenSpan);
            var record = new ArrayBufferWriter<byte>();
            BinaryCodec.WriteSigned(record, 1);
            BinaryCodec.WriteVarint(record, 1);
            record.Write<byte>([(byte)RowWriteKind.Create]);
            BinaryCodec.WriteVarint(record, (ulong)Vm.Ordinal);
            BinaryCodec.WriteString(record, "OpaqueRef:" + Guid.NewGuid());
            BinaryCodec.WriteVarint(record, 1);
            BinaryCodec.WriteVarint(record, (ulong)Vm.FieldsByName["other_config"].Ordinal);
            record.Write(NestedSets(400_000));
            Frame(journal, record.WrittenSpan);
            File.WriteAllBytes(Path.Combine(dir, JournalStore.JournalFile), journal.WrittenSpan.ToArray());

            // Whether such a record is cut as a bad tail or refused is the journal's policy; the
            // process must live to apply it.
            try
            {
                using var store = JournalStore.Open(new XapiDatabase(), dir, NullLogger.Instance);
                Assert.That(store.LoadReport.JournalRecords, Is.Zero);
            }
            catch (DatabaseFormatException)
            {
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Frame(ArrayBufferWriter<byte> output, ReadOnlySpan<byte> payload)
    {
        var span = output.GetSpan(8);
        BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Crc32C.Compute(payload));
        output.Advance(8);
        output.Write(payload);
    }
}
