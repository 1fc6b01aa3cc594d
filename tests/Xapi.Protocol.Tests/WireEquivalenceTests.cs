using System.Buffers;
using System.Text;
using Xapi.Model;

namespace Xapi.Protocol.Tests;

/// <summary>
/// The hand-written encoders against the reference writers, byte for byte, on values chosen to
/// hit every escape, every type and every buffer boundary.
/// </summary>
public class WireEquivalenceTests
{
    private static readonly RpcRequest V1 = new("x", [], RpcDialect.JsonRpcV1, "17"u8.ToArray());
    private static readonly RpcRequest V2 = new("x", [], RpcDialect.JsonRpcV2, "\"a\\\"b\""u8.ToArray());

    // Records reached the old writers as field-name dictionaries.
    private static object? AsReference(object? value) => value switch
    {
        RecordValue record => new ValueMap(record.ToDictionary(kv => kv.Key, kv => AsReference(kv.Value))),
        ValueMap map => new ValueMap(map.ToDictionary(kv => kv.Key, kv => AsReference(kv.Value))),
        object?[] list => list.Select(AsReference).ToArray(),
        List<object?> list => list.Select(AsReference).ToList(),
        _ => value,
    };

    private static void AssertSame(object? value, Func<IBufferWriter<byte>>? newBuffer = null)
    {
        newBuffer ??= () => new ArrayBufferWriter<byte>();
        var reference = AsReference(value);
        Assert.Multiple(() =>
        {
            Assert.That(Xml(value, newBuffer()), Is.EqualTo(Xml(reference, null)), "XML-RPC");
            Assert.That(Json(V1, value, newBuffer()), Is.EqualTo(Json(V1, reference, null)), "JSON-RPC v1");
            Assert.That(Json(V2, value, newBuffer()), Is.EqualTo(Json(V2, reference, null)), "JSON-RPC v2");
            Assert.That(Streamed(w => StreamedReplies.WriteXmlRpcSuccessAsync(w, value, default)), Is.EqualTo(Xml(reference, null)), "XML-RPC, streamed");
            Assert.That(Streamed(w => StreamedReplies.WriteJsonRpcSuccessAsync(w, V1, value, default)), Is.EqualTo(Json(V1, reference, null)), "JSON-RPC v1, streamed");
            Assert.That(Streamed(w => StreamedReplies.WriteJsonRpcSuccessAsync(w, V2, value, default)), Is.EqualTo(Json(V2, reference, null)), "JSON-RPC v2, streamed");
        });
    }

    private static string Streamed(Func<IReplyWriter, ValueTask> write)
    {
        var output = new CheckpointedWriter();
        write(output).AsTask().GetAwaiter().GetResult();
        return Hex(output.Buffer.WrittenSpan);
    }

    /// <summary>Holds everything, and checks that nothing is mid-write at a checkpoint.</summary>
    private sealed class CheckpointedWriter : IReplyWriter
    {
        public ArrayBufferWriter<byte> Buffer { get; } = new();

        public int Checkpoints { get; private set; }

        public void Advance(int count) => Buffer.Advance(count);

        public Memory<byte> GetMemory(int sizeHint = 0) => Buffer.GetMemory(sizeHint);

        public Span<byte> GetSpan(int sizeHint = 0) => Buffer.GetSpan(sizeHint);

        public async ValueTask CheckpointAsync(CancellationToken cancellationToken)
        {
            Checkpoints++;
            // Going asynchronous here is what a flush to a slow client does.
            if (Checkpoints % 7 == 0)
            {
                await Task.Yield();
            }
        }
    }

    [Test]
    public void A_streamed_reply_reaches_a_checkpoint_after_every_element_of_its_top_containers()
    {
        var events = Enumerable.Range(0, 1_000).Select(i => (object?)new ValueMap(new Dictionary<object, object?> { ["id"] = i.ToString(System.Globalization.CultureInfo.InvariantCulture) })).ToList();
        var value = new ValueMap(new Dictionary<object, object?> { ["events"] = events, ["token"] = "t" });
        var xml = new CheckpointedWriter();
        StreamedReplies.WriteXmlRpcSuccessAsync(xml, value, default).AsTask().GetAwaiter().GetResult();
        var json = new CheckpointedWriter();
        StreamedReplies.WriteJsonRpcSuccessAsync(json, V2, value, default).AsTask().GetAwaiter().GetResult();
        Assert.Multiple(() =>
        {
            Assert.That(xml.Checkpoints, Is.GreaterThanOrEqualTo(1_000));
            Assert.That(json.Checkpoints, Is.GreaterThanOrEqualTo(1_000));
        });
    }

    private static string Xml(object? value, IBufferWriter<byte>? output)
    {
        if (output is null)
        {
            var buffer = new ArrayBufferWriter<byte>();
            ReferenceXmlRpc.WriteSuccess(buffer, value);
            return Hex(buffer.WrittenSpan);
        }
        XmlRpcWriter.WriteSuccess(output, value);
        return Written(output);
    }

    private static string Json(RpcRequest request, object? value, IBufferWriter<byte>? output)
    {
        if (output is null)
        {
            var buffer = new ArrayBufferWriter<byte>();
            ReferenceJsonRpc.WriteSuccess(buffer, request, value);
            return Hex(buffer.WrittenSpan);
        }
        JsonRpc.WriteSuccess(output, request, value);
        return Written(output);
    }

    private static string Written(IBufferWriter<byte> output) => output switch
    {
        ArrayBufferWriter<byte> array => Hex(array.WrittenSpan),
        PooledBufferWriter pooled => Hex(pooled.ToArray()),
        _ => throw new ArgumentException("unknown buffer"),
    };

    // Text where it decodes, so a failure shows where; hex keeps invalid UTF-8 comparable.
    private static string Hex(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes) + "|" + Convert.ToHexString(bytes);

    [Test]
    public void Every_utf16_code_unit_alone_and_between_ascii_is_encoded_as_before()
    {
        var alone = new List<object?>();
        var between = new List<object?>();
        for (var c = 0; c <= char.MaxValue; c++)
        {
            alone.Add(((char)c).ToString());
            between.Add($"a{(char)c}b");
        }
        AssertSame(alone.ToArray());
        AssertSame(between.ToArray());
    }

    [Test]
    public void Surrogate_pairs_and_lone_surrogates_are_encoded_as_before() =>
        AssertSame(new object?[] { "😀", "x\uD83D", "\uDE00x", "\uD83D\uD83D\uDE00", "a\uDE00<\uD800>&\r\n\"\\\u007F\u0080\u2028\uFFFE\uFEFF" });

    [Test]
    public void Scalars_are_encoded_as_before()
    {
        AssertSame(new object?[]
        {
            null, "", 0L, -1L, long.MinValue, long.MaxValue, 0, int.MinValue, int.MaxValue, true, false,
            0.0, -0.0, 1.0, 0.1, 1e20, 1e-300, double.Epsilon, double.MaxValue, Math.PI, double.NaN, double.PositiveInfinity, double.NegativeInfinity,
            new DateTime(1, 1, 1, 0, 0, 0, DateTimeKind.Utc), new DateTime(9999, 12, 31, 23, 59, 59, DateTimeKind.Utc),
            new DateTime(2012, 3, 4, 5, 6, 7, 890, DateTimeKind.Utc), new DateTime(2012, 3, 4, 5, 6, 7, DateTimeKind.Unspecified),
            new DateTime(2012, 3, 4, 5, 6, 7, DateTimeKind.Local), XType.Epoch,
            Array.Empty<byte>(), new byte[] { 0, 1, 2, 250, 251, 252, 253, 254, 255 },
            ValueMap.Empty, ValueSet.Empty, new[] { "a", null, "<&>" },
            new Dictionary<string, object?> { ["k\"<"] = 1L, ["é"] = null },
            new ValueMap(new Dictionary<object, object?> { [1L] = "one", [true] = 2.5, ["s"] = new object?[] { 3L } }),
        });
        AssertSame("top level string");
        AssertSame(null);
        AssertSame(42);
    }

    [Test]
    public void Records_of_every_class_are_encoded_as_before()
    {
        var random = new Random(20240611);
        foreach (var cls in ApiSchema.Classes)
        {
            AssertSame(RandomRecord(random, cls));
        }
    }

    [Test]
    public void Large_replies_match_across_buffer_boundaries_in_pooled_buffers()
    {
        var random = new Random(7);
        var vm = ApiSchema.Class("VM");
        var records = new Dictionary<object, object?>();
        for (var i = 0; i < 300; i++)
        {
            records[$"OpaqueRef:{i}"] = RandomRecord(random, vm);
        }
        var long1 = new string('x', 300_000) + "<é>" + new string('y', 70_000);
        var long2 = string.Concat(Enumerable.Repeat("ab😀\"", 50_000));
        var value = new ValueMap(new Dictionary<object, object?> { ["records"] = new ValueMap(records), ["long1"] = long1, ["long2"] = long2 });
        AssertSame(value, () => new PooledBufferWriter());
        AssertSame(value);
    }

    [Test]
    public void Event_batches_holding_records_are_encoded_as_before()
    {
        var random = new Random(3);
        var events = ApiSchema.Classes.Take(20).Select((cls, i) => (object?)new ValueMap(new Dictionary<object, object?>
        {
            ["id"] = i.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["timestamp"] = "1718000000.123000",
            ["class"] = cls.EventName,
            ["operation"] = "add",
            ["ref"] = "OpaqueRef:" + i,
            ["obj_uuid"] = Guid.NewGuid().ToString(),
            ["snapshot"] = RandomRecord(random, cls),
        })).ToList();
        AssertSame(new ValueMap(new Dictionary<object, object?>
        {
            ["events"] = events,
            ["valid_ref_counts"] = new ValueMap(new Dictionary<object, object?> { ["vm"] = 3 }),
            ["token"] = "00000000000000000001,00000000000000000000",
        }));
    }

    [Test]
    public void Long_strings_and_many_values_cross_buffer_boundaries_as_before()
    {
        var items = new Dictionary<object, object?>();
        for (var i = 0; i < 5_000; i++)
        {
            items[$"key{i}"] = new object?[] { i % 3 == 0 ? "é<" : "plain", (long)i, i % 2 == 0, XType.Epoch.AddDays(i) };
        }
        items["long1"] = new string('x', 300_000) + "<é>" + new string('y', 70_000);
        items["long2"] = string.Concat(Enumerable.Repeat("ab😀\"", 50_000));
        AssertSame(new ValueMap(items));
    }

    [TestCase(997)]
    [TestCase(998)]
    [TestCase(999)]
    [TestCase(1000)]
    public void Json_nesting_is_refused_at_the_same_depth_as_before(int depth)
    {
        object? value = "leaf";
        for (var i = 0; i < depth; i++)
        {
            value = i % 2 == 0 ? new object?[] { value } : new ValueMap(new Dictionary<object, object?> { ["k"] = value });
        }
        string Outcome(Action write)
        {
            try
            {
                write();
                return "written";
            }
            catch (InvalidOperationException)
            {
                return "refused";
            }
        }
        Assert.That(Outcome(() => JsonRpc.WriteSuccess(new ArrayBufferWriter<byte>(), V2, value)),
            Is.EqualTo(Outcome(() => ReferenceJsonRpc.WriteSuccess(new ArrayBufferWriter<byte>(), V2, value))));
        if (depth < 999)
        {
            AssertSame(value);
        }
    }

    [Test]
    public void Records_read_as_maps_keyed_by_field_name()
    {
        var vm = ApiSchema.Class("VM");
        var record = RandomRecord(new Random(1), vm);
        var asMap = (IReadOnlyDictionary<object, object?>)record;
        Assert.Multiple(() =>
        {
            Assert.That(asMap.Keys, Is.EqualTo(vm.Fields.Select(f => f.Name)));
            Assert.That(asMap["name_label"], Is.SameAs(record.FieldValues[vm.FieldsByName["name_label"].Ordinal]));
            Assert.That(asMap.Count, Is.EqualTo(vm.Fields.Count));
            Assert.That(asMap.ContainsKey("no_such_field"), Is.False);
            Assert.That(asMap.TryGetValue(1L, out _), Is.False);
            Assert.Throws<KeyNotFoundException>(() => _ = asMap["no_such_field"]);
            Assert.That(XType.ToDisplayString(record), Is.EqualTo(XType.ToDisplayString(AsReference(record))));
        });
    }

    [Test]
    public void Pooled_buffers_hand_back_what_was_written_in_order()
    {
        using var pooled = new PooledBufferWriter();
        var expected = new List<byte>();
        var random = new Random(5);
        for (var i = 0; i < 2_000; i++)
        {
            var size = random.Next(0, i % 100 == 0 ? 200_000 : 3_000);
            var span = pooled.GetSpan(size);
            Assert.That(span.Length, Is.GreaterThanOrEqualTo(Math.Max(size, 1)));
            var used = random.Next(0, size + 1);
            for (var j = 0; j < used; j++)
            {
                span[j] = (byte)(i + j);
                expected.Add((byte)(i + j));
            }
            pooled.Advance(used);
        }
        var copy = new ArrayBufferWriter<byte>();
        pooled.CopyTo(copy);
        Assert.Multiple(() =>
        {
            Assert.That(pooled.WrittenCount, Is.EqualTo(expected.Count));
            Assert.That(pooled.ToArray(), Is.EqualTo(expected.ToArray()));
            Assert.That(copy.WrittenSpan.ToArray(), Is.EqualTo(expected.ToArray()));
        });
    }

    private static RecordValue RandomRecord(Random random, ClassMeta cls)
    {
        var values = new object?[cls.Fields.Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = RandomValue(random, cls.Fields[i].Type, 0);
        }
        return new RecordValue(cls, values);
    }

    private static readonly string[] Pieces =
        ["", "a", "OpaqueRef:NULL", "<", ">", "&", "\r", "\n", "\t", "\"", "\\", "'", "/", "+", "`", "\u0000", "\u001F", "\u007F", "é", "日本", "😀", "\uD800", "\u2028", " "];

    private static string RandomString(Random random)
    {
        var builder = new StringBuilder();
        for (var n = random.Next(0, 6); n > 0; n--)
        {
            builder.Append(random.Next(3) == 0 ? Pieces[random.Next(Pieces.Length)] : "plain-" + random.Next(1000));
        }
        return builder.ToString();
    }

    private static object? RandomValue(Random random, XType type, int depth) => type.Kind switch
    {
        XTypeKind.String or XTypeKind.Ref => RandomString(random),
        XTypeKind.Enum => type.EnumMeta.Values[random.Next(type.EnumMeta.Values.Count)],
        XTypeKind.Int => (long)random.NextInt64(long.MinValue, long.MaxValue) >> random.Next(64),
        XTypeKind.Float => random.Next(10) == 0 ? double.NaN : random.NextDouble() * Math.Pow(10, random.Next(-20, 20)),
        XTypeKind.Bool => random.Next(2) == 0,
        XTypeKind.DateTime => XType.Epoch.AddSeconds(random.NextInt64(0, 4_000_000_000)),
        XTypeKind.Option => random.Next(3) == 0 ? null : RandomValue(random, type.Element!, depth),
        XTypeKind.Set => Enumerable.Range(0, random.Next(0, 4)).Select(_ => RandomValue(random, type.Element!, depth + 1)).ToArray(),
        XTypeKind.Map => new ValueMap(Enumerable.Range(0, random.Next(0, 4))
            .Select(_ => (Key: RandomValue(random, type.Key!, depth + 1)!, Value: RandomValue(random, type.Element!, depth + 1)))
            .DistinctBy(p => p.Key).ToDictionary(p => p.Key, p => p.Value)),
        XTypeKind.Record when depth < 2 && ApiSchema.ClassesByName.TryGetValue(type.Name!, out var inner) => RandomRecord(random, inner),
        _ => null,
    };
}
