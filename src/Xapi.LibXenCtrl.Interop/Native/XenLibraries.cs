using System.Reflection;
using System.Runtime.InteropServices;

namespace Xapi.LibXenCtrl.Interop.Native;

/// <summary>
/// The Xen 4.17 libraries by the sonames Debian's runtime packages install. Bindings name them by
/// a short logical name; the resolver maps it to the versioned file, because the unversioned
/// <c>libxenlight.so</c> exists only with the -dev package and a newer Xen's ABI differs.
/// </summary>
internal static class XenLibraries
{
    public const string Xenlight = "xenlight";
    public const string Xenctrl = "xenctrl";
    public const string Xenstore = "xenstore";
    public const string Xentoollog = "xentoollog";
    public const string Libc = "c";

    /// <summary>Logical name → (soname, the Debian package that ships it).</summary>
    public static readonly IReadOnlyList<(string Name, string Soname, string Package)> All =
    [
        (Xenlight, "libxenlight.so.4.17", "libxenmisc4.17"),
        (Xenctrl, "libxenctrl.so.4.17", "libxenmisc4.17"),
        (Xenstore, "libxenstore.so.4", "libxenstore4"),
        (Xentoollog, "libxentoollog.so.1", "libxentoollog1"),
    ];

    private const string LibcSoname = "libc.so.6";

    private static int s_registered;

    public static string SonameOf(string name) =>
        name == Libc ? LibcSoname : All.First(l => l.Name == name).Soname;

    /// <summary>Installs the resolver once; every binding class calls this from its static constructor.</summary>
    public static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref s_registered, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(XenLibraries).Assembly, Resolve);
        }
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName == Libc)
        {
            return NativeLibrary.Load(LibcSoname);
        }
        foreach (var (name, soname, package) in All)
        {
            if (name == libraryName)
            {
                if (NativeLibrary.TryLoad(soname, out var handle))
                {
                    return handle;
                }
                throw new DllNotFoundException($"{soname} not found (install {package})");
            }
        }
        return 0;
    }
}
