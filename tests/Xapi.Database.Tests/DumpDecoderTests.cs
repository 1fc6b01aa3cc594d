using System.Buffers;
using Xapi.Database.Persistence;

namespace Xapi.Database.Tests;

/// <summary>What the dump fuzz run found, kept as plain tests.</summary>
public class DumpDecoderTests
{
    [TestCase(-1L)]
    [TestCase(long.MaxValue)]
    [TestCase(long.MinValue)]
    public void A_stored_date_out_of_range_is_a_format_error(long ticks)
    {
        var output = new ArrayBufferWriter<byte>();
        output.Write<byte>([6]);
        BinaryCodec.WriteSigned(output, ticks);
        var bytes = output.WrittenSpan.ToArray();
        Assert.That(() => new Persistence.BinaryReader(bytes).ReadValue(), Throws.TypeOf<FormatException>().With.Message.Contains("date"));
    }
}
