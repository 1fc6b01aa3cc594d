using System.Buffers;
using System.Collections.Concurrent;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>
/// A class's field names as each wire format spells them around a record's values, encoded
/// once: a thousand records would otherwise escape and transcode the same names a thousand times.
/// </summary>
internal sealed class RecordTags
{
    private static readonly ConcurrentDictionary<ClassMeta, RecordTags> Cache = new();

    private RecordTags(ClassMeta cls)
    {
        var fields = cls.Fields;
        XmlMembers = new byte[fields.Count][];
        JsonNames = new byte[fields.Count][];
        var buffer = new ArrayBufferWriter<byte>();
        for (var i = 0; i < fields.Count; i++)
        {
            buffer.ResetWrittenCount();
            var sink = new Utf8Sink(buffer);
            sink.Write(i == 0 ? "<member><name>"u8 : "</member><member><name>"u8);
            XmlRpcWriter.WriteEscaped(ref sink, fields[i].Name);
            sink.Write("</name>"u8);
            sink.Flush();
            XmlMembers[i] = buffer.WrittenSpan.ToArray();

            buffer.ResetWrittenCount();
            sink = new Utf8Sink(buffer);
            if (i > 0)
            {
                sink.Write((byte)',');
            }
            JsonRpc.WriteString(ref sink, fields[i].Name);
            sink.Write((byte)':');
            sink.Flush();
            JsonNames[i] = buffer.WrittenSpan.ToArray();
        }
    }

    /// <summary>
    /// Per field, what comes before its XML-RPC <c>&lt;value&gt;</c>: the previous member's
    /// close (but for the first field), then this member's open and name.
    /// </summary>
    public byte[][] XmlMembers { get; }

    /// <summary>Per field, what comes before its JSON value: a comma but for the first, then the quoted name and colon.</summary>
    public byte[][] JsonNames { get; }

    public static RecordTags For(ClassMeta cls) => Cache.GetOrAdd(cls, static c => new RecordTags(c));
}
