using System.Text.Json;
using System.Text.Json.Serialization;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>
/// What the Xen backend knows of its domains beyond what Xen keeps: each domain's config as the
/// daemon gave it (VBD keys, disk bindings, memory range) and what libxl was given for each disk.
/// Kept in a file as xenopsd keeps its VM metadata, so that after a daemon restart the devices of
/// a domain found again can still be changed.
/// </summary>
internal static class XenBackendState
{
    private const int Version = 1;

    private static readonly JsonSerializerOptions s_json = new()
    {
        Converters = { new JsonStringEnumConverter() },
    };

    internal sealed record Entry(DomainConfig Config, uint DomId, IReadOnlyDictionary<string, XenDisk> Disks);

    private sealed record StateFile(int Version, List<Entry> Domains);

    /// <summary>Writes the entries atomically (a temporary file renamed over the old one).</summary>
    public static void Write(string path, IEnumerable<Entry> entries)
    {
        var temporary = path + ".tmp";
        File.WriteAllBytes(temporary, JsonSerializer.SerializeToUtf8Bytes(new StateFile(Version, [.. entries]), s_json));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>The entries the file holds; none when there is no file.</summary>
    /// <exception cref="InvalidDataException">the file cannot be read as this backend's state</exception>
    public static IReadOnlyList<Entry> Read(string path)
    {
        if (!File.Exists(path))
        {
            return [];
        }
        try
        {
            var state = JsonSerializer.Deserialize<StateFile>(File.ReadAllBytes(path), s_json) ?? throw new InvalidDataException("empty");
            return state.Version == Version
                ? state.Domains
                : throw new InvalidDataException($"version {state.Version}; this backend reads version {Version}");
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or NotSupportedException)
        {
            throw new InvalidDataException($"the Xen backend's state file {path} cannot be read: {e.Message}", e);
        }
    }
}
