using System.Buffers;
using Xapi.Database.Persistence;
using Xapi.Model;
using BinaryReader = Xapi.Database.Persistence.BinaryReader;

namespace Xapi.Database.Replication;

/// <summary>
/// The bytes members and the master exchange: rows by class name and ref, values in
/// <see cref="BinaryCodec"/>'s encoding. Both ends run the same datamodel (a join checks the
/// schema), so a row carries every field in ordinal order.
/// </summary>
public static class ReplicationCodec
{
    private const byte Absent = 0;
    private const byte Present = 1;

    public static byte[] EncodeChanges(IReadOnlyList<RowChange> changes)
    {
        var output = new ArrayBufferWriter<byte>();
        BinaryCodec.WriteVarint(output, (ulong)changes.Count);
        foreach (var change in changes)
        {
            BinaryCodec.WriteString(output, change.Class.Name);
            BinaryCodec.WriteString(output, change.Ref);
            WriteOptionalRow(output, change.Before);
            WriteOptionalRow(output, change.After);
        }
        return output.WrittenSpan.ToArray();
    }

    public static IReadOnlyList<RowChange> DecodeChanges(ReadOnlySpan<byte> data)
    {
        var reader = new BinaryReader(data);
        var count = reader.ReadCount();
        var changes = new List<RowChange>(count);
        for (var i = 0; i < count; i++)
        {
            var cls = ReadClass(ref reader);
            var reference = reader.ReadString();
            var before = ReadOptionalRow(ref reader, cls);
            var after = ReadOptionalRow(ref reader, cls);
            changes.Add(new RowChange(cls, reference, before, after));
        }
        ExpectEnd(reader);
        return changes;
    }

    public static byte[] EncodeDelta(ReplicaDelta delta)
    {
        var output = new ArrayBufferWriter<byte>();
        WriteDelta(output, delta);
        return output.WrittenSpan.ToArray();
    }

    public static ReplicaDelta DecodeDelta(ReadOnlySpan<byte> data)
    {
        var reader = new BinaryReader(data);
        var delta = ReadDelta(ref reader);
        ExpectEnd(reader);
        return delta;
    }

    public static byte[] EncodeCommitReply(ReplicaCommitReply reply)
    {
        var output = new ArrayBufferWriter<byte>();
        WriteByte(output, reply.Committed ? Present : Absent);
        WriteDelta(output, reply.Delta);
        return output.WrittenSpan.ToArray();
    }

    public static ReplicaCommitReply DecodeCommitReply(ReadOnlySpan<byte> data)
    {
        var reader = new BinaryReader(data);
        var committed = reader.ReadByte() == Present;
        var delta = ReadDelta(ref reader);
        ExpectEnd(reader);
        return new ReplicaCommitReply(committed, delta);
    }

    /// <summary>The bytes <see cref="BinaryCodec"/> gives a row's values: two rows are the same when these are.</summary>
    public static byte[] RowBytes(IReadOnlyList<object?> values)
    {
        var output = new ArrayBufferWriter<byte>();
        WriteValues(output, values);
        return output.WrittenSpan.ToArray();
    }

    private static void WriteDelta(ArrayBufferWriter<byte> output, ReplicaDelta delta)
    {
        BinaryCodec.WriteString(output, delta.Epoch);
        BinaryCodec.WriteSigned(output, delta.From);
        BinaryCodec.WriteSigned(output, delta.To);
        WriteByte(output, delta.Full ? Present : Absent);
        BinaryCodec.WriteVarint(output, (ulong)delta.Rows.Count);
        foreach (var row in delta.Rows)
        {
            BinaryCodec.WriteString(output, row.Class.Name);
            BinaryCodec.WriteString(output, row.Ref);
            WriteValues(output, row.Values);
        }
        BinaryCodec.WriteVarint(output, (ulong)delta.Deletes.Count);
        foreach (var delete in delta.Deletes)
        {
            BinaryCodec.WriteString(output, delete.Class.Name);
            BinaryCodec.WriteString(output, delete.Ref);
        }
    }

    private static ReplicaDelta ReadDelta(ref BinaryReader reader)
    {
        var epoch = reader.ReadString();
        var from = reader.ReadSigned();
        var to = reader.ReadSigned();
        var full = reader.ReadByte() == Present;
        var rowCount = reader.ReadCount();
        var rows = new List<ReplicaRow>(rowCount);
        for (var i = 0; i < rowCount; i++)
        {
            var cls = ReadClass(ref reader);
            var reference = reader.ReadString();
            rows.Add(new ReplicaRow(cls, reference, ReadValues(ref reader, cls)));
        }
        var deleteCount = reader.ReadCount();
        var deletes = new List<ReplicaDelete>(deleteCount);
        for (var i = 0; i < deleteCount; i++)
        {
            var cls = ReadClass(ref reader);
            deletes.Add(new ReplicaDelete(cls, reader.ReadString()));
        }
        return new ReplicaDelta(epoch, from, to, full, rows, deletes);
    }

    private static void WriteOptionalRow(ArrayBufferWriter<byte> output, object?[]? values)
    {
        WriteByte(output, values is null ? Absent : Present);
        if (values is not null)
        {
            WriteValues(output, values);
        }
    }

    private static object?[]? ReadOptionalRow(ref BinaryReader reader, ClassMeta cls) =>
        reader.ReadByte() == Present ? ReadValues(ref reader, cls) : null;

    private static void WriteValues(ArrayBufferWriter<byte> output, IReadOnlyList<object?> values)
    {
        BinaryCodec.WriteVarint(output, (ulong)values.Count);
        for (var i = 0; i < values.Count; i++)
        {
            BinaryCodec.WriteValue(output, values[i]);
        }
    }

    private static object?[] ReadValues(ref BinaryReader reader, ClassMeta cls)
    {
        var count = reader.ReadCount();
        if (count != cls.Fields.Count)
        {
            throw new FormatException($"a {cls.Name} row has {cls.Fields.Count} fields, not {count}: the hosts run different datamodels");
        }
        var values = new object?[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = reader.ReadValue();
        }
        return values;
    }

    private static ClassMeta ReadClass(ref BinaryReader reader)
    {
        var name = reader.ReadString();
        return ApiSchema.ClassesByName.TryGetValue(name, out var cls) ? cls : throw new FormatException($"unknown class {name}");
    }

    private static void WriteByte(ArrayBufferWriter<byte> output, byte value)
    {
        output.GetSpan(1)[0] = value;
        output.Advance(1);
    }

    private static void ExpectEnd(BinaryReader reader)
    {
        if (!reader.AtEnd)
        {
            throw new FormatException("unexpected data after the end");
        }
    }
}
