using System.Diagnostics;
using System.Text.Json;

namespace Xapi.Storage.Formats.Qcow2;

/// <summary>
/// qcow2 images through Debian's <c>qemu-img</c> (qemu-utils): the maintained implementation
/// of the format that Xen's qdisk backend reads. Every run dies with the daemon
/// (<c>setpriv --pdeathsig KILL</c>), so a killed daemon leaves no half-run tool holding an
/// image lock when it restarts; the operations used are safe to run again after such a kill.
/// </summary>
public static class QemuImg
{
    public const string Format = "qcow2";
    public const string Extension = ".qcow2";

    /// <summary>What <c>qemu-img info</c> says of one image, without opening its backing file.</summary>
    public sealed record ImageInfo(long VirtualSize, long ActualSize, string? BackingFile, string Format);

    /// <summary>
    /// One run of the chain's map: which layer (0 = the image itself) holds the bytes, and for
    /// data stored plainly (not compressed) where in that layer's file they start.
    /// </summary>
    public sealed record MapEntry(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long? Offset = null);

    public static async Task CreateAsync(string path, long size, CancellationToken cancellationToken)
    {
        await RunAsync(["create", "-q", "-f", Format, "-o", "cluster_size=65536", path, size.ToString(System.Globalization.CultureInfo.InvariantCulture)], cancellationToken).ConfigureAwait(false);
        FlushFile(path);
    }

    /// <summary>An empty image over <paramref name="backingName"/>, named relative to the image's directory.</summary>
    public static async Task CreateOverlayAsync(string path, string backingName, CancellationToken cancellationToken)
    {
        await RunAsync(["create", "-q", "-f", Format, "-o", "cluster_size=65536", "-b", backingName, "-F", Format, path], cancellationToken).ConfigureAwait(false);
        FlushFile(path);
    }

    public static async Task<ImageInfo> InfoAsync(string path, CancellationToken cancellationToken)
    {
        var output = await RunAsync(["info", "-U", "--output=json", path], cancellationToken).ConfigureAwait(false);
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        return new ImageInfo(
            root.GetProperty("virtual-size").GetInt64(),
            root.TryGetProperty("actual-size", out var actual) ? actual.GetInt64() : 0,
            root.TryGetProperty("backing-filename", out var backing) ? backing.GetString() : null,
            root.GetProperty("format").GetString() ?? "");
    }

    public static Task ResizeAsync(string path, long size, CancellationToken cancellationToken) =>
        RunAsync(["resize", "-q", "-f", Format, path, size.ToString(System.Globalization.CultureInfo.InvariantCulture)], cancellationToken);

    /// <summary>
    /// Writes the image's own clusters into its backing file and keeps the image as it was
    /// (<c>-d</c>), so every view through the image is unchanged while it runs and after.
    /// </summary>
    public static Task CommitAsync(string path, CancellationToken cancellationToken) =>
        RunAsync(["commit", "-q", "-d", "-t", "writeback", "-f", Format, path], cancellationToken);

    /// <summary>Points the image at another backing file without copying: both must read the same.</summary>
    public static async Task RebaseUnsafeAsync(string path, string? backingName, CancellationToken cancellationToken)
    {
        string[] arguments = backingName is null
            ? ["rebase", "-q", "-u", "-f", Format, "-b", "", path]
            : ["rebase", "-q", "-u", "-f", Format, "-b", backingName, "-F", Format, path];
        await RunAsync(arguments, cancellationToken).ConfigureAwait(false);
        FlushFile(path);
    }

    /// <summary>
    /// Points the image at another backing file (none: flattens it), first copying into it every
    /// cluster the old and new backing read differently, so the image reads the same throughout;
    /// run again after a kill, it copies what is left.
    /// </summary>
    public static async Task RebaseAsync(string path, string? backingName, CancellationToken cancellationToken)
    {
        string[] arguments = backingName is null
            ? ["rebase", "-q", "-f", Format, "-b", "", path]
            : ["rebase", "-q", "-f", Format, "-b", backingName, "-F", Format, path];
        await RunAsync(arguments, cancellationToken).ConfigureAwait(false);
        FlushFile(path);
    }

    public static async Task<IReadOnlyList<MapEntry>> MapAsync(string path, CancellationToken cancellationToken)
    {
        var output = await RunAsync(["map", "-U", "--output=json", "-f", Format, path], cancellationToken).ConfigureAwait(false);
        using var json = JsonDocument.Parse(output);
        return json.RootElement.EnumerateArray().Select(e => new MapEntry(
            e.GetProperty("start").GetInt64(),
            e.GetProperty("length").GetInt64(),
            e.GetProperty("depth").GetInt32(),
            e.GetProperty("present").GetBoolean(),
            e.GetProperty("zero").GetBoolean(),
            e.GetProperty("data").GetBoolean(),
            e.TryGetProperty("offset", out var offset) ? offset.GetInt64() : null)).ToList();
    }

    private static void FlushFile(string path)
    {
        if (path.StartsWith("nfs://", StringComparison.Ordinal))
        {
            // No local file: qemu-img's nfs driver sends COMMIT before it exits.
            return;
        }
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>Runs qemu-img; a failure raises an SM error carrying what the tool said.</summary>
    public static async Task<string> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var (exitCode, output, error) = await ToolProcess.RunAsync("qemu-img", arguments, null, cancellationToken).ConfigureAwait(false);
        if (exitCode != 0)
        {
            if (error.Contains("No space left on device", StringComparison.Ordinal) || error.Contains("NFS3ERR_NOSPC", StringComparison.Ordinal))
            {
                throw new SmException(SmErrors.SrNoSpace, SmErrors.NoSpaceMessage, error);
            }
            throw new SmException(SmErrors.Eio, $"qemu-img {arguments[0]} failed (exit {exitCode})", error);
        }
        return output;
    }
}
