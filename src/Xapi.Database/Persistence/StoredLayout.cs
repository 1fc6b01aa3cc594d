using System.Buffers;
using Xapi.Model;

namespace Xapi.Database.Persistence;

/// <summary>
/// The table layout a file was written with: its format version and, per class, its field
/// names. Values are stored by position in this layout, and mapped by name on load, so a file
/// from an older schema loads into the current one (missing fields take their defaults).
/// </summary>
public sealed class StoredLayout
{
    /// <summary>The on-disk format this daemon writes. Older ones are upgraded on load; newer ones refused.</summary>
    public const int CurrentVersion = 1;

    private StoredLayout(int version, ClassMeta?[] classes, FieldMeta?[][] fields)
    {
        Version = version;
        Classes = classes;
        Fields = fields;
    }

    public int Version { get; }

    /// <summary>Stored class ordinal → current class (null when this daemon no longer has it).</summary>
    public ClassMeta?[] Classes { get; }

    /// <summary>Stored class ordinal, stored field ordinal → current field (null when gone).</summary>
    public FieldMeta?[][] Fields { get; }

    public static void WriteCurrent(IBufferWriter<byte> output)
    {
        BinaryCodec.WriteVarint(output, (ulong)ApiSchema.Classes.Length);
        foreach (var cls in ApiSchema.Classes)
        {
            BinaryCodec.WriteString(output, cls.Name);
            BinaryCodec.WriteVarint(output, (ulong)cls.Fields.Count);
            foreach (var field in cls.Fields)
            {
                BinaryCodec.WriteString(output, field.Name);
            }
        }
    }

    public static StoredLayout Read(ref BinaryReader reader, int version, string file)
    {
        if (version > CurrentVersion)
        {
            throw new DatabaseFormatException(
                $"{file} was written in database format {version}, newer than this daemon's format {CurrentVersion}: upgrade xapi-dotnet to open it");
        }
        var classCount = reader.ReadCount();
        var classes = new ClassMeta?[classCount];
        var fields = new FieldMeta?[classCount][];
        for (var c = 0; c < classCount; c++)
        {
            var cls = classes[c] = ApiSchema.ClassesByName.GetValueOrDefault(reader.ReadString());
            var fieldCount = reader.ReadCount();
            fields[c] = new FieldMeta?[fieldCount];
            for (var f = 0; f < fieldCount; f++)
            {
                var name = reader.ReadString();
                fields[c][f] = cls?.FieldsByName.GetValueOrDefault(name);
            }
        }
        return new StoredLayout(version, classes, fields);
    }
}

/// <summary>
/// A database file or dump that cannot be used as it is; the message says what to do. The one
/// exception <see cref="JournalStore.ReadSnapshot"/> and <see cref="DumpValidator"/> throw for
/// bad data, whatever the bytes.
/// </summary>
public sealed class DatabaseFormatException(string message, Exception? inner = null) : Exception(message, inner);
