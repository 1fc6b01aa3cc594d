using System.Text;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>
/// The Xen backend's suspend image: one header line naming the image's format and its VM, then
/// libxl's own stream (what libxl_domain_suspend writes). libxl's stream does not say which VM it
/// is of, so without the header a VM could be resumed from another VM's image.
/// </summary>
public static class XenSuspendImage
{
    private const string Magic = "xapi-dotnet xen suspend image v1 vm ";

    /// <summary>"magic" + a uuid in its 36-character form + '\n'.</summary>
    private static readonly int HeaderLength = Encoding.ASCII.GetByteCount(Magic) + 36 + 1;

    public static async Task WriteHeaderAsync(Stream destination, Guid vm, CancellationToken cancellationToken) =>
        await destination.WriteAsync(Encoding.ASCII.GetBytes(Magic + vm.ToString("D") + "\n"), cancellationToken);

    /// <summary>Reads exactly the header, leaving <paramref name="source"/> at libxl's stream.</summary>
    /// <exception cref="SuspendImageException">not an image of this backend, or of another VM</exception>
    public static async Task ReadHeaderAsync(Stream source, Guid vm, CancellationToken cancellationToken)
    {
        var header = new byte[HeaderLength];
        var read = await source.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false, cancellationToken);
        var text = Encoding.ASCII.GetString(header, 0, read);
        if (read < header.Length || !text.StartsWith(Magic, StringComparison.Ordinal) || text[^1] != '\n'
            || !Guid.TryParseExact(text.AsSpan(Magic.Length, 36), "D", out var owner))
        {
            throw new SuspendImageException("the suspend image is not one the Xen backend wrote");
        }
        if (owner != vm)
        {
            throw new SuspendImageException($"the suspend image belongs to VM {owner}, not {vm}");
        }
    }
}
