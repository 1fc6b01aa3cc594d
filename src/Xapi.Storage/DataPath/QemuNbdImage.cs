namespace Xapi.Storage.DataPath;

// Placeholder until the NBD branch lands; replaced by its implementation.
public sealed class QemuNbdImage
{
    public static ValueTask<IDiskImage> OpenAsync(string image, string format, bool writable, string socketDirectory, CancellationToken cancellationToken) =>
        throw new NotSupportedException("qemu-nbd images are not built yet");
}
