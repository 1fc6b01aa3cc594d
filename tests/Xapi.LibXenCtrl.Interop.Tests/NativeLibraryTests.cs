using System.Reflection;
using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>The bindings against Debian's installed Xen 4.17 runtime libraries (scripts/test.sh installs them).</summary>
public class NativeLibraryTests
{
    [TestCase("libxenlight.so.4.17")]
    [TestCase("libxenctrl.so.4.17")]
    [TestCase("libxenstore.so.4")]
    [TestCase("libxentoollog.so.1")]
    public void Each_Xen_library_loads_by_its_versioned_soname(string soname)
    {
        Assert.That(NativeLibrary.TryLoad(soname, out var handle), Is.True, $"{soname} does not load: install the package XenLibraries names for it");
        NativeLibrary.Free(handle);
    }

    [Test]
    public void The_bindings_name_exactly_the_four_versioned_libraries()
    {
        Assert.That(XenLibraries.All.Select(l => l.Soname),
            Is.EquivalentTo(new[] { "libxenlight.so.4.17", "libxenctrl.so.4.17", "libxenstore.so.4", "libxentoollog.so.1" }));
    }

    /// <summary>
    /// Every P/Invoke the compiler emitted for the assembly (LibraryImport generates one per
    /// binding), by the library and entry point it names, must resolve in that library.
    /// </summary>
    [Test]
    public void Every_imported_symbol_resolves_in_the_library_the_binding_names()
    {
        var imports = PInvokes().ToList();
        // The bindings of Libxl, Xtl, Xc, Xs and Libc: a reflection that found none would prove nothing.
        Assert.That(imports, Has.Count.GreaterThanOrEqualTo(40));
        var missing = new List<string>();
        foreach (var (library, entryPoint) in imports)
        {
            var handle = NativeLibrary.Load(XenLibraries.SonameOf(library));
            if (!NativeLibrary.TryGetExport(handle, entryPoint, out _))
            {
                missing.Add($"{entryPoint} in {XenLibraries.SonameOf(library)}");
            }
        }
        Assert.That(missing, Is.Empty);
    }

    [Test]
    public void The_libxl_entry_points_the_backend_needs_are_bound()
    {
        var entryPoints = PInvokes().Select(p => p.EntryPoint).ToHashSet();
        Assert.That(entryPoints, Is.SupersetOf(new[]
        {
            "libxl_ctx_alloc", "libxl_ctx_free", "libxl_childproc_setmode", "libxl_childproc_sigchld_occurred",
            "libxl_domain_config_init", "libxl_domain_config_from_json", "libxl_domain_config_dispose", "libxl_domain_create_new",
            "xc_interface_open", "xs_open", "xtl_createlogger_stdiostream",
        }));
    }

    [Test]
    public unsafe void Domain_config_init_and_dispose_stay_within_the_size_the_bindings_allocate()
    {
        // libxl_domain_config_init clears exactly sizeof(libxl_domain_config); a larger struct
        // than the bindings allocate would overwrite the guard bytes after it.
        const int Guard = 256;
        var buffer = (byte*)NativeMemory.Alloc(LibxlLayout.DomainConfigSize + Guard);
        try
        {
            new Span<byte>(buffer, LibxlLayout.DomainConfigSize + Guard).Fill(0xA5);
            Libxl.libxl_domain_config_init((nint)buffer);
            Libxl.libxl_domain_config_dispose((nint)buffer);
            Assert.That(new Span<byte>(buffer + LibxlLayout.DomainConfigSize, Guard).ToArray(), Is.All.EqualTo(0xA5));
            Assert.That(new Span<byte>(buffer, LibxlLayout.DomainConfigSize).IndexOfAnyExcept((byte)0xA5), Is.GreaterThanOrEqualTo(0), "init wrote nothing");
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }

    private static IEnumerable<(string Library, string EntryPoint)> PInvokes()
    {
        const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        foreach (var type in typeof(LibxlContext).Assembly.GetTypes())
        {
            foreach (var method in type.GetMethods(All))
            {
                if (method.Attributes.HasFlag(MethodAttributes.PinvokeImpl) && method.GetCustomAttribute<DllImportAttribute>() is { } import)
                {
                    yield return (import.Value, import.EntryPoint ?? method.Name);
                }
            }
        }
    }
}
