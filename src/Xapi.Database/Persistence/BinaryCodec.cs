using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Xapi.Model;

namespace Xapi.Database.Persistence;

/// <summary>
/// The on-disk encoding of runtime values: self-describing tags, varint lengths, UTF-8 strings.
/// Compact and fast enough that loading a large pool is bounded by memory, not parsing.
/// </summary>
public static class BinaryCodec
{
    /// <summary>
    /// How deeply sets and maps may nest, in both directions. The deepest datamodel type nests
    /// two levels (a map of sets), so this leaves room for schema growth while a crafted dump or
    /// journal record cannot recurse the decoder off the end of its stack.
    /// </summary>
    public const int MaxDepth = 32;

    private enum Tag : byte
    {
        Null = 0,
        String = 1,
        Long = 2,
        Double = 3,
        True = 4,
        False = 5,
        DateTime = 6,
        Set = 7,
        Map = 8,
        Int = 9,
    }

    public static void WriteVarint(IBufferWriter<byte> output, ulong value)
    {
        var span = output.GetSpan(10);
        var i = 0;
        while (value >= 0x80)
        {
            span[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        span[i++] = (byte)value;
        output.Advance(i);
    }

    public static void WriteSigned(IBufferWriter<byte> output, long value) => WriteVarint(output, (ulong)((value << 1) ^ (value >> 63)));

    public static void WriteString(IBufferWriter<byte> output, string value)
    {
        var length = Encoding.UTF8.GetByteCount(value);
        WriteVarint(output, (ulong)length);
        var span = output.GetSpan(length);
        Encoding.UTF8.GetBytes(value, span);
        output.Advance(length);
    }

    public static void WriteValue(IBufferWriter<byte> output, object? value) => WriteValue(output, value, 0);

    private static void WriteValue(IBufferWriter<byte> output, object? value, int depth)
    {
        if (depth > MaxDepth)
        {
            // Stored values are coerced to datamodel types, so only a bug gets here: fail the
            // write rather than the process, and never write what the reader would refuse.
            throw new InvalidOperationException($"cannot store a value nested deeper than {MaxDepth}");
        }
        switch (value)
        {
            case null:
                WriteTag(output, Tag.Null);
                break;
            case string s:
                WriteTag(output, Tag.String);
                WriteString(output, s);
                break;
            case long l:
                WriteTag(output, Tag.Long);
                WriteSigned(output, l);
                break;
            case int i:
                WriteTag(output, Tag.Int);
                WriteSigned(output, i);
                break;
            case double d:
                WriteTag(output, Tag.Double);
                BinaryPrimitives.WriteDoubleLittleEndian(output.GetSpan(8), d);
                output.Advance(8);
                break;
            case bool b:
                WriteTag(output, b ? Tag.True : Tag.False);
                break;
            case DateTime dt:
                WriteTag(output, Tag.DateTime);
                WriteSigned(output, dt.ToUniversalTime().Ticks);
                break;
            case ValueMap map:
                WriteTag(output, Tag.Map);
                WriteVarint(output, (ulong)map.Count);
                foreach (var (k, v) in map)
                {
                    WriteValue(output, k, depth + 1);
                    WriteValue(output, v, depth + 1);
                }
                break;
            case IReadOnlyList<object?> list:
                WriteTag(output, Tag.Set);
                WriteVarint(output, (ulong)list.Count);
                for (var i = 0; i < list.Count; i++)
                {
                    WriteValue(output, list[i], depth + 1);
                }
                break;
            default:
                throw new InvalidOperationException($"cannot store a {value.GetType().Name}");
        }
    }

    private static void WriteTag(IBufferWriter<byte> output, Tag tag)
    {
        output.GetSpan(1)[0] = (byte)tag;
        output.Advance(1);
    }
}

/// <summary>
/// Reads what <see cref="BinaryCodec"/> wrote. Anything else (truncated, unknown tags, counts
/// larger than the data, values out of range, nesting deeper than <see cref="BinaryCodec.MaxDepth"/>)
/// throws <see cref="FormatException"/> and nothing else.
/// </summary>
public ref struct BinaryReader(ReadOnlySpan<byte> data)
{
    // Loading a large pool decodes millions of values; most are booleans, small numbers and
    // empty sets, which can share one immutable box each.
    private static readonly object True = true;
    private static readonly object False = false;
    private static readonly object[] SmallLongs = Enumerable.Range(-1, 258).Select(i => (object)(long)i).ToArray();

    private readonly ReadOnlySpan<byte> _data = data;
    private int _position;

    public readonly int Position => _position;

    public readonly bool AtEnd => _position >= _data.Length;

    public byte ReadByte() => _position < _data.Length ? _data[_position++] : throw new FormatException("unexpected end of data");

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            var b = ReadByte();
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
        throw new FormatException("varint too long");
    }

    public int ReadCount()
    {
        var count = ReadVarint();
        return count <= (ulong)(_data.Length - _position) ? (int)count : throw new FormatException("count larger than the data");
    }

    /// <summary>An index into a table (class or field ordinal): bounded by the table, not by the data.</summary>
    public int ReadOrdinal()
    {
        var value = ReadVarint();
        return value <= int.MaxValue ? (int)value : throw new FormatException("ordinal out of range");
    }

    public long ReadSigned()
    {
        var raw = ReadVarint();
        return (long)(raw >> 1) ^ -(long)(raw & 1);
    }

    public string ReadString()
    {
        var length = ReadCount();
        var text = Encoding.UTF8.GetString(_data.Slice(_position, length));
        _position += length;
        return text;
    }

    public ReadOnlySpan<byte> ReadBytes(int length)
    {
        if (length > _data.Length - _position)
        {
            throw new FormatException("unexpected end of data");
        }
        var bytes = _data.Slice(_position, length);
        _position += length;
        return bytes;
    }

    public object? ReadValue() => ReadValue(0);

    // Recursive, so bounded: a dump is checksummed, not trusted, and 400,000 nested sets once
    // overflowed the stack and killed the daemon.
    private object? ReadValue(int depth)
    {
        if (depth > BinaryCodec.MaxDepth)
        {
            throw new FormatException($"value nested deeper than {BinaryCodec.MaxDepth}");
        }
        switch (ReadByte())
        {
            case 0:
                return null;
            case 1:
                return ReadString();
            case 2:
                var number = ReadSigned();
                return number is >= -1 and <= 256 ? SmallLongs[number + 1] : number;
            case 3:
                return BinaryPrimitives.ReadDoubleLittleEndian(ReadBytes(8));
            case 4:
                return True;
            case 5:
                return False;
            case 6:
                var ticks = ReadSigned();
                return ticks >= DateTime.MinValue.Ticks && ticks <= DateTime.MaxValue.Ticks
                    ? new DateTime(ticks, DateTimeKind.Utc)
                    : throw new FormatException("date out of range");
            case 7:
                var itemCount = ReadCount();
                if (itemCount == 0)
                {
                    return ValueSet.Empty;
                }
                var items = new object?[itemCount];
                for (var i = 0; i < items.Length; i++)
                {
                    items[i] = ReadValue(depth + 1);
                }
                return items;
            case 8:
                var count = ReadCount();
                // Sized by what is plausible, not by the count: repeated keys collapse, so a
                // large count must not reserve memory the data never fills.
                var map = new Dictionary<object, object?>(Math.Min(count, 64));
                for (var i = 0; i < count; i++)
                {
                    var key = ReadValue(depth + 1) ?? throw new FormatException("null map key");
                    map[key] = ReadValue(depth + 1);
                }
                return count == 0 ? ValueMap.Empty : new ValueMap(map);
            case 9:
                return (int)ReadSigned();
            case var tag:
                throw new FormatException($"unknown value tag {tag}");
        }
    }
}

/// <summary>CRC-32C (Castagnoli), hardware-accelerated where the CPU has it.</summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        while (data.Length >= 8)
        {
            crc = System.Numerics.BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (var b in data)
        {
            crc = System.Numerics.BitOperations.Crc32C(crc, b);
        }
        return ~crc;
    }
}
