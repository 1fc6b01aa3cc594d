namespace Xapi.Storage.Formats.Vhd;

/// <summary>
/// A VHD stream that is not a well-formed VHD: bad checksum, inconsistent header, a block allocation
/// table pointing outside the file or at overlapping blocks, or a stream that ends early. The message
/// says what is wrong in words a user can act on; the HTTP import maps it to its I/O error.
/// </summary>
public class VhdFormatException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A well-formed VHD whose virtual size does not fit the disk it is imported into.</summary>
public sealed class VhdTooLargeException(long virtualSize, long targetSize)
    : VhdFormatException($"the VHD's virtual size is {virtualSize} bytes, larger than the {targetSize} bytes of the disk it is imported into")
{
    public long VirtualSize { get; } = virtualSize;

    public long TargetSize { get; } = targetSize;
}
