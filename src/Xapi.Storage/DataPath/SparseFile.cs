using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Xapi.Storage.DataPath;

/// <summary>Which parts of a sparse file hold data, through <c>lseek(SEEK_DATA/SEEK_HOLE)</c>.</summary>
internal static partial class SparseFile
{
    private const int SeekData = 3;
    private const int SeekHole = 4;

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(SafeFileHandle fd, long offset, int whence);

    private const int SeekEnd = 2;

    public static long EndOffset(SafeFileHandle handle) => Math.Max(0, LSeek(handle, 0, SeekEnd));

    public static IEnumerable<DiskExtent> Extents(SafeFileHandle handle, long offset, long length)
    {
        var end = offset + length;
        var position = offset;
        while (position < end)
        {
            var data = LSeek(handle, position, SeekData);
            if (data < 0)
            {
                // ENXIO: no data after here; any other failure (no SEEK_DATA support): say data.
                var errno = Marshal.GetLastPInvokeError();
                if (errno == 6)
                {
                    yield return new DiskExtent(position, end - position, Zero: true);
                }
                else
                {
                    yield return new DiskExtent(position, end - position, Zero: false);
                }
                yield break;
            }
            if (data > position)
            {
                var holeEnd = Math.Min(data, end);
                yield return new DiskExtent(position, holeEnd - position, Zero: true);
                position = holeEnd;
                if (position >= end)
                {
                    yield break;
                }
            }
            var hole = LSeek(handle, position, SeekHole);
            var dataEnd = hole < 0 ? end : Math.Min(hole, end);
            yield return new DiskExtent(position, dataEnd - position, Zero: false);
            position = dataEnd;
        }
    }
}
