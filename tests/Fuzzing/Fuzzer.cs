using System.Diagnostics;
using System.Text;

namespace Xapi.Tests.Fuzzing;

/// <summary>
/// A seeded fuzz loop for one decoder: generated and mutated inputs for a time budget, where the
/// decoder must return or throw one of its documented exceptions, never anything else. The seed
/// comes from XAPI_FUZZ_SEED or is drawn at random, and is printed first so a failure (even a
/// crash that takes the test host with it) can be replayed.
/// </summary>
public static class Fuzzer
{
    public static int Seed { get; } = Environment.GetEnvironmentVariable("XAPI_FUZZ_SEED") is { Length: > 0 } text
        ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture)
        : Random.Shared.Next();

    /// <summary>Runs the loop; returns how many inputs were accepted and how many refused.</summary>
    /// <param name="target">Names the decoder; also makes its input stream independent of the others'.</param>
    /// <param name="documented">The exceptions the decoder is documented to throw for bad input.</param>
    public static (int Accepted, int Refused) Run(string target, TimeSpan budget, Func<Random, byte[]> generate, Action<byte[]> decode, Func<Exception, bool> documented)
    {
        var start = $"fuzz {target}: seed {Seed} (replay with XAPI_FUZZ_SEED={Seed}), budget {budget.TotalSeconds:0} s";
        TestContext.Progress.WriteLine(start);
        TestContext.Out.WriteLine(start);
        var random = new Random(Seed ^ StableHash(target));
        var clock = Stopwatch.StartNew();
        var accepted = 0;
        var refused = 0;
        for (var n = 0; clock.Elapsed < budget; n++)
        {
            var input = generate(random);
            try
            {
                decode(input);
                accepted++;
            }
            catch (Exception e) when (documented(e))
            {
                refused++;
            }
            catch (Exception e)
            {
                Assert.Fail($"fuzz {target}, seed {Seed}, input #{n} ({input.Length} bytes) threw {e.GetType().Name}: {e.Message}\n"
                    + $"input (base64, first 4 KiB): {Convert.ToBase64String(input, 0, Math.Min(input.Length, 4096))}\n{e}");
            }
        }
        var end = $"fuzz {target}: {accepted + refused} inputs in {clock.Elapsed.TotalSeconds:0.0} s, {accepted} accepted, {refused} refused";
        TestContext.Progress.WriteLine(end);
        TestContext.Out.WriteLine(end);
        Assert.Multiple(() =>
        {
            Assert.That(accepted + refused, Is.GreaterThan(1000), "the budget allowed a real run");
            Assert.That(accepted, Is.Positive, "the generator reaches past the first checks");
            Assert.That(refused, Is.Positive, "the generator makes bad input too");
        });
        return (accepted, refused);
    }

    private static int StableHash(string text)
    {
        var hash = 17;
        foreach (var c in text)
        {
            hash = unchecked((hash * 31) + c);
        }
        return hash;
    }

    /// <summary>Byte-level damage to a valid input: the mutations that found bugs in other parsers.</summary>
    public static byte[] Mutate(Random random, byte[] input, IReadOnlyList<byte[]>? tokens = null)
    {
        var data = new List<byte>(input);
        var rounds = 1 + random.Next(random.Next(2) == 0 ? 3 : 12);
        for (var round = 0; round < rounds; round++)
        {
            var at = data.Count == 0 ? 0 : random.Next(data.Count + 1);
            switch (random.Next(11))
            {
                case 0: // flip bits
                    if (data.Count > 0)
                    {
                        var i = Math.Min(at, data.Count - 1);
                        data[i] ^= (byte)(1 << random.Next(8));
                    }
                    break;
                case 1: // a random byte
                    if (data.Count > 0)
                    {
                        data[Math.Min(at, data.Count - 1)] = (byte)random.Next(256);
                    }
                    break;
                case 2: // truncate
                    data.RemoveRange(at, data.Count - at);
                    break;
                case 3: // delete a range
                    data.RemoveRange(at, random.Next(Math.Min(64, data.Count - at) + 1));
                    break;
                case 4: // duplicate a range, sometimes many times
                {
                    var length = random.Next(Math.Min(64, data.Count - at) + 1);
                    var range = data.GetRange(at, length);
                    var times = random.Next(3) == 0 ? random.Next(2, 2000) : 1;
                    for (var t = 0; t < times && data.Count < 400_000; t++)
                    {
                        data.InsertRange(at, range);
                    }
                    break;
                }
                case 5: // bad UTF-8: overlong, lone continuation, surrogate, beyond U+10FFFF, truncated sequence
                    data.InsertRange(at, Pick(random, BadUtf8));
                    break;
                case 6: // control characters and the non-characters
                    data.InsertRange(at, Pick(random, Controls));
                    break;
                case 7: // bad numbers
                    data.InsertRange(at, Encoding.ASCII.GetBytes(Pick(random, BadNumbers)));
                    break;
                case 8: // a token of the grammar, sometimes repeated deep
                    if (tokens is { Count: > 0 })
                    {
                        var token = Pick(random, tokens);
                        var times = random.Next(4) == 0 ? random.Next(2, 5000) : 1;
                        for (var t = 0; t < times && data.Count < 400_000; t++)
                        {
                            data.InsertRange(at, token);
                        }
                    }
                    break;
                case 9: // swap two bytes
                    if (data.Count > 1)
                    {
                        var j = random.Next(data.Count);
                        var i = Math.Min(at, data.Count - 1);
                        (data[i], data[j]) = (data[j], data[i]);
                    }
                    break;
                default: // interesting bytes
                    data.Insert(at, Pick(random, InterestingBytes));
                    break;
            }
        }
        return [.. data];
    }

    public static T Pick<T>(Random random, IReadOnlyList<T> items) => items[random.Next(items.Count)];

    private static char PickChar(Random random, string items) => items[random.Next(items.Length)];

    private static readonly byte[][] BadUtf8 =
    [
        [0xC0, 0x80], [0xC1, 0xBF], [0x80], [0xBF], [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF], [0xF4, 0x90, 0x80, 0x80],
        [0xF8, 0x88, 0x80, 0x80, 0x80], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xFF], [0xFE], [0xEF, 0xBB, 0xBF], [0xFE, 0xFF],
    ];

    private static readonly byte[][] Controls =
    [
        [0x00], [0x01], [0x08], [0x0B], [0x0C], [0x1B], [0x1F], [0x7F], [0xC2, 0x85], [0xEF, 0xBF, 0xBE], [0xEF, 0xBF, 0xBF], [0xE2, 0x80, 0xA8],
    ];

    private static readonly string[] BadNumbers =
    [
        "1e999", "-1e999", "1e-999", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
        "123456789012345678901234567890123456789", "0x10", "1_000", "NaN", "-Infinity", "infinity", "1.", ".5", "-", "+1", "00012",
        "1e", "1e+", "--1", "4294967296", "2147483648", "-0", "1.7976931348623157e309", "4.9e-325",
    ];

    private static readonly byte[] InterestingBytes = [0, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x26, 0x27, 0x2C, 0x3A, 0x3B, 0x3C, 0x3E, 0x5B, 0x5C, 0x5D, 0x7B, 0x7D, 0x7F, 0x80, 0xFF];

    /// <summary>Text for a string value: plain, markup-ish, escapes, controls, astral and lone surrogates.</summary>
    public static string Text(Random random)
    {
        var length = random.Next(4) == 0 ? random.Next(200) : random.Next(12);
        var sb = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            sb.Append(random.Next(10) switch
            {
                < 5 => (char)random.Next('a', 'z' + 1),
                5 => PickChar(random, "<>&\"'\\/\r\n\t ]:,{}"),
                6 => (char)random.Next(0, 0x20),
                7 => (char)random.Next(0xD800, 0xE000),
                8 => PickChar(random, "\uFFFE\uFFFF\uFEFF\u2028\u0085é\uD83D\uDE00"),
                _ => (char)random.Next(0x20, 0x10000),
            });
        }
        return sb.ToString();
    }
}
