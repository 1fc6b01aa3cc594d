using System.Runtime.InteropServices;

namespace Xapi.LibXenCtrl.Interop.Native;

/// <summary>
/// libxenlight 4.17 (libxl.h, _libxl_types.h, libxl_event.h, libxl_utils.h). Structs are passed as
/// pointers to native memory sized and read with <see cref="LibxlLayout"/>, whose numbers a test
/// checks against a C probe compiled with the real headers. <c>ao_how</c> is always null: every
/// call is synchronous on the calling thread.
/// </summary>
internal static partial class Libxl
{
    static Libxl() => XenLibraries.EnsureResolver();

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_ctx_alloc(out LibxlContextHandle pctx, int version, uint flags, nint logger);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_ctx_free(nint ctx);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_childproc_setmode(LibxlContextHandle ctx, nint hooks, nint user);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_childproc_sigchld_occurred(LibxlContextHandle ctx);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_domain_config_init(nint config);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_domain_config_dispose(nint config);

    [LibraryImport(XenLibraries.Xenlight, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int libxl_domain_config_from_json(LibxlContextHandle ctx, nint config, string json);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_create_new(LibxlContextHandle ctx, nint config, out uint domid, nint aoHow, nint aopConsoleHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_create_restore(LibxlContextHandle ctx, nint config, out uint domid, int restoreFd, int sendBackFd, nint parameters, nint aoHow, nint aopConsoleHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_domain_restore_params_init(nint parameters);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_domain_restore_params_dispose(nint parameters);

    /// <summary>Suspends the guest and writes its state to <paramref name="fd"/>; the domain is left shut down (suspend).</summary>
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_suspend(LibxlContextHandle ctx, uint domid, int fd, int flags, nint aoHow);

    /// <summary>Asks the guest to suspend and waits until it has, saving nothing.</summary>
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_suspend_only(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_device_disk_init(nint disk);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_device_disk_dispose(nint disk);

    [LibraryImport(XenLibraries.Xenlight, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int libxl_device_disk_from_json(LibxlContextHandle ctx, nint disk, string json);

    /// <summary>The disk the guest has as <paramref name="vdev"/>, read back from xenstore.</summary>
    [LibraryImport(XenLibraries.Xenlight, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int libxl_vdev_to_device_disk(LibxlContextHandle ctx, uint domid, string vdev, nint disk);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_disk_add(LibxlContextHandle ctx, uint domid, nint disk, nint aoHow);

    /// <summary>Asks the guest to let go of the disk, then removes it.</summary>
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_disk_remove(LibxlContextHandle ctx, uint domid, nint disk, nint aoHow);

    /// <summary>Removes the disk without asking the guest.</summary>
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_disk_destroy(LibxlContextHandle ctx, uint domid, nint disk, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_device_nic_init(nint nic);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_device_nic_dispose(nint nic);

    [LibraryImport(XenLibraries.Xenlight, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int libxl_device_nic_from_json(LibxlContextHandle ctx, nint nic, string json);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_devid_to_device_nic(LibxlContextHandle ctx, uint domid, int devid, nint nic);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_nic_add(LibxlContextHandle ctx, uint domid, nint nic, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_nic_remove(LibxlContextHandle ctx, uint domid, nint nic, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_device_nic_destroy(LibxlContextHandle ctx, uint domid, nint nic, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_pause(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_unpause(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_shutdown(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_reboot(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_destroy(LibxlContextHandle ctx, uint domid, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial nint libxl_list_domain(LibxlContextHandle ctx, out int count);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_dominfo_list_free(nint list, int count);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_dominfo_init(nint info);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_dominfo_dispose(nint info);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_domain_info(LibxlContextHandle ctx, nint info, uint domid);

    /// <summary>Returns a malloc'd name, or null when the domain does not exist.</summary>
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial nint libxl_domid_to_name(LibxlContextHandle ctx, uint domid);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_physinfo_init(nint info);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_physinfo_dispose(nint info);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_get_physinfo(LibxlContextHandle ctx, nint info);

    // The 64-bit forms: without LIBXL_API_VERSION the header maps no _0x040700 variant.
    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_get_free_memory(LibxlContextHandle ctx, out ulong memKib);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_get_memory_target(LibxlContextHandle ctx, uint domid, out ulong targetKib);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_set_memory_target(LibxlContextHandle ctx, uint domid, long targetKib, int relative, int enforce);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_set_vcpuonline(LibxlContextHandle ctx, uint domid, nint cpumap, nint aoHow);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_bitmap_init(nint bitmap);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial int libxl_bitmap_alloc(LibxlContextHandle ctx, nint bitmap, int bits);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_bitmap_set(nint bitmap, int bit);

    [LibraryImport(XenLibraries.Xenlight)]
    public static partial void libxl_bitmap_dispose(nint bitmap);
}

/// <summary>libxentoollog: the logger libxl_ctx_alloc and xc_interface_open write through.</summary>
internal static partial class Xtl
{
    static Xtl() => XenLibraries.EnsureResolver();

    [LibraryImport(XenLibraries.Xentoollog)]
    public static partial nint xtl_createlogger_stdiostream(nint file, int minLevel, uint flags);

    [LibraryImport(XenLibraries.Xentoollog)]
    public static partial void xtl_logger_destroy(nint logger);
}

/// <summary>libxenctrl: the raw hypervisor interface (only opened, to tell whether it can be).</summary>
internal static partial class Xc
{
    static Xc() => XenLibraries.EnsureResolver();

    [LibraryImport(XenLibraries.Xenctrl, SetLastError = true)]
    public static partial XcInterfaceHandle xc_interface_open(nint logger, nint dombuildLogger, uint openFlags);

    [LibraryImport(XenLibraries.Xenctrl)]
    public static partial int xc_interface_close(nint xch);
}

/// <summary>libxenstore: the guest agent's data lives in the domain's xenstore tree.</summary>
internal static partial class Xs
{
    static Xs() => XenLibraries.EnsureResolver();

    [LibraryImport(XenLibraries.Xenstore, SetLastError = true)]
    public static partial XsHandle xs_open(nuint flags);

    [LibraryImport(XenLibraries.Xenstore)]
    public static partial void xs_close(nint handle);

    /// <summary>A malloc'd value (free it), or null when the path does not exist.</summary>
    [LibraryImport(XenLibraries.Xenstore, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint xs_read(XsHandle handle, uint transaction, string path, out uint length);

    [LibraryImport(XenLibraries.Xenstore, StringMarshalling = StringMarshalling.Utf8)]
    [return: MarshalAs(UnmanagedType.U1)]
    public static partial bool xs_watch(XsHandle handle, string path, string token);

    /// <summary>A descriptor that becomes readable when watch events are pending.</summary>
    [LibraryImport(XenLibraries.Xenstore)]
    public static partial int xs_fileno(XsHandle handle);

    /// <summary>One pending watch event (a malloc'd vector: free it), or null when none is pending.</summary>
    [LibraryImport(XenLibraries.Xenstore)]
    public static partial nint xs_check_watch(XsHandle handle);

    /// <summary>A malloc'd array of <paramref name="count"/> strings in one block (free the array only).</summary>
    [LibraryImport(XenLibraries.Xenstore, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint xs_directory(XsHandle handle, uint transaction, string path, out uint count);
}

/// <summary>The C library calls needed to hand libxentoollog a FILE*.</summary>
internal static partial class Libc
{
    static Libc() => XenLibraries.EnsureResolver();

    [LibraryImport(XenLibraries.Libc, SetLastError = true)]
    public static partial int dup(int fd);

    [LibraryImport(XenLibraries.Libc, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial nint fdopen(int fd, string mode);

    [LibraryImport(XenLibraries.Libc)]
    public static partial int fclose(nint file);

    [LibraryImport(XenLibraries.Libc, SetLastError = true)]
    public static unsafe partial int poll(PollFd* fds, nuint count, int timeoutMs);

    public const short PollIn = 1;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }
}
