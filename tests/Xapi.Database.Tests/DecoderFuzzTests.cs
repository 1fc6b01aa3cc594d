using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Tests.Fuzzing;

namespace Xapi.Database.Tests;

/// <summary>
/// The where-expression parser and the dump decoder against generated and damaged input. A
/// where-expression parses and evaluates or is refused as <c>INVALID_VALUE</c>; a dump decodes or
/// is refused with <see cref="DatabaseFormatException"/> (a bare value with
/// <see cref="FormatException"/>). Nothing else may escape.
/// </summary>
[Category("Fuzz")]
[Category("Slow")]
[Explicit("35 s per decoder: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class DecoderFuzzTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(35);

    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    private static readonly string[] FieldNames =
        [.. Vm.Fields.Select(f => f.Name).Take(40), "name__label", "_ref", "no_such_field", "", "name__", "__"];

    private static XapiDatabase SmallPool()
    {
        var db = new XapiDatabase();
        var random = new Random(5);
        for (var i = 0; i < 4; i++)
        {
            db.Write(tx => tx.Create(Vm, new Dictionary<string, object?>
            {
                ["name_label"] = "vm" + i,
                ["is_a_template"] = i % 2 == 0,
                ["other_config"] = ValueMap.FromPairs([new("k" + i, "v\u00e9"), new("empty", "")]),
                ["tags"] = new object?[] { "a", "b" + i },
                ["memory_static_max"] = (long)random.Next(),
                ["VCPUs_max"] = (long)i,
                ["last_booted_record"] = "<xml/>",
            }));
        }
        return db;
    }

    [Test]
    public void The_where_expression_parser_parses_and_evaluates_or_refuses_every_input()
    {
        var db = SmallPool();
        var snapshot = db.Snapshot;
        var rows = snapshot.All(Vm).ToList();
        byte[][] tokens = [.. new[] { "(", ")", "not ", " and ", " or ", "\"", "\\", "field ", "=", "true", "false", "\\\"" }.Select(Encoding.UTF8.GetBytes)];
        Fuzzer.Run("where-expression", Budget, random =>
        {
            var valid = Encoding.UTF8.GetBytes(Expression(random, 0, MaxDepth(random)));
            return random.Next(3) == 0 ? valid : Fuzzer.Mutate(random, valid, tokens);
        }, input =>
        {
            var expression = WhereExpression.Parse(Encoding.UTF8.GetString(input));
            foreach (var row in rows)
            {
                expression.Matches(snapshot, row);
            }
        }, e => e is XenApiException { Code: "INVALID_VALUE" });
    }

    private static int MaxDepth(Random random) => random.Next(10) switch
    {
        < 7 => random.Next(5),
        < 9 => WhereExpression.MaxDepth - 3 + random.Next(6),
        _ => random.Next(1_000, 60_000),
    };

    private static string Expression(Random random, int depth, int maxDepth)
    {
        if (maxDepth > 1_000)
        {
            var (open, close) = Fuzzer.Pick(random, [("(", ")"), ("not ", ""), ("not (", ")")]);
            return string.Concat(Enumerable.Repeat(open, maxDepth)) + Atom(random) + string.Concat(Enumerable.Repeat(close, maxDepth));
        }
        if (depth >= maxDepth)
        {
            return Atom(random);
        }
        return random.Next(6) switch
        {
            0 => "not " + Expression(random, depth + 1, maxDepth),
            1 => "(" + Expression(random, depth + 1, maxDepth) + ")",
            2 or 3 => string.Join(random.Next(2) == 0 ? " and " : " or ",
                Enumerable.Range(0, depth == 0 && random.Next(8) == 0 ? random.Next(100, 5_000) : 2 + random.Next(3))
                    .Select(_ => Expression(random, depth + 1, Math.Min(maxDepth, depth + 2)))),
            _ => Atom(random),
        };
    }

    private static string Atom(Random random) => random.Next(8) switch
    {
        0 => "true",
        1 => "false",
        _ => Operand(random) + Fuzzer.Pick(random, ["=", " = ", "="]) + Operand(random),
    };

    private static string Operand(Random random) => random.Next(3) == 0
        ? Quoted(random.Next(3) == 0 ? Fuzzer.Text(random) : "vm" + random.Next(5))
        : "field " + Quoted(Fuzzer.Pick(random, FieldNames));

    private static string Quoted(string text) => "\"" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";

    // Nesting kept modest (at most 40 here): a dump nested hundreds of thousands deep is refused
    // by the decoder's own depth bound, which is tested where that bound lives.
    private const int DumpNesting = 40;

    [Test]
    public void The_dump_decoder_decodes_or_refuses_every_input()
    {
        var seeds = new[] { JournalStore.EncodeSnapshot(SmallPool().Snapshot).WrittenSpan.ToArray(), JournalStore.EncodeSnapshot(new XapiDatabase().Snapshot).WrittenSpan.ToArray() };
        byte[][] tokens = [[7, 1], [8, 1, 1, 1, 97], [7, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], [6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], [2, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7F], [9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], [3, 0, 0, 0, 0, 0, 0, 0xF0, 0x7F], [10], [0xFF]];
        Fuzzer.Run("dump", Budget, random =>
        {
            if (random.Next(3) == 0)
            {
                // A bare value, as the journal and dump store each field.
                var value = new ArrayBufferWriter<byte>();
                BinaryCodec.WriteValue(value, StoredValue(random, 0, random.Next(8) == 0 ? DumpNesting : random.Next(4)));
                var bytes = random.Next(3) == 0 ? value.WrittenSpan.ToArray() : MutateModestly(random, value.WrittenSpan.ToArray(), tokens);
                return [0, .. bytes];
            }
            var dump = Fuzzer.Pick(random, seeds);
            var damaged = random.Next(4) == 0 ? dump : MutateModestly(random, dump, tokens);
            if (random.Next(10) != 0 && damaged.Length >= 12)
            {
                // Mostly with a checksum that matches, so the damage reaches the decoder.
                var crc = Crc32C.Compute(damaged.AsSpan(0, damaged.Length - 4));
                BinaryPrimitives.WriteUInt32LittleEndian(damaged.AsSpan(damaged.Length - 4), crc);
            }
            return [1, .. damaged];
        }, input =>
        {
            if (input[0] == 0)
            {
                var reader = new Persistence.BinaryReader(input.AsSpan(1));
                reader.ReadValue();
            }
            else
            {
                JournalStore.ReadSnapshot(input[1..], "the fuzzed dump");
            }
        }, e => e is DatabaseFormatException || (e is FormatException && e.StackTrace?.Contains("BinaryReader", StringComparison.Ordinal) == true));
    }

    // Repeated tokens stay under the nesting kept for this target.
    private static byte[] MutateModestly(Random random, byte[] input, byte[][] tokens)
    {
        var mutated = Fuzzer.Mutate(random, input);
        if (random.Next(3) == 0)
        {
            var at = random.Next(mutated.Length + 1);
            var token = Fuzzer.Pick(random, tokens);
            var times = 1 + random.Next(DumpNesting);
            var inserted = new List<byte>(mutated);
            for (var t = 0; t < times; t++)
            {
                inserted.InsertRange(at, token);
            }
            mutated = [.. inserted];
        }
        return mutated;
    }

    private static object? StoredValue(Random random, int depth, int maxDepth) => (depth < maxDepth ? random.Next(10) : random.Next(8)) switch
    {
        0 => null,
        1 => Fuzzer.Text(random),
        2 => random.NextInt64(long.MinValue, long.MaxValue),
        3 => random.Next(2) == 0 ? random.NextDouble() : Fuzzer.Pick(random, [double.NaN, double.PositiveInfinity, -0.0, double.Epsilon, double.MaxValue]),
        4 => random.Next(2) == 0,
        5 => new DateTime(random.NextInt64(DateTime.MinValue.Ticks, DateTime.MaxValue.Ticks), DateTimeKind.Utc),
        6 => random.Next(),
        7 => "",
        8 => Enumerable.Range(0, random.Next(4)).Select(_ => StoredValue(random, depth + 1, maxDepth)).ToArray(),
        _ => ValueMap.FromPairs([.. Enumerable.Range(0, random.Next(4)).Select(i => new KeyValuePair<object, object?>("k" + i, StoredValue(random, depth + 1, maxDepth)))]),
    };
}
