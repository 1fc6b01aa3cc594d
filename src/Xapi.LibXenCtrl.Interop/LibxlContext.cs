using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>One domain as libxl_list_domain / libxl_domain_info report it (libxl_dominfo, the fields read).</summary>
public sealed record LibxlDomainInfo(
    Guid Uuid,
    uint DomId,
    bool Running,
    bool Blocked,
    bool Paused,
    bool Shutdown,
    bool Dying,
    int ShutdownReason,
    ulong CurrentMemKib,
    ulong MaxMemKib,
    ulong CpuTimeNs,
    uint VcpuMaxId,
    uint VcpuOnline,
    int DomainType);

/// <summary>The host as libxl_get_physinfo reports it (the fields read); <paramref name="CpuKhz"/> is Xen's measured TSC rate.</summary>
public sealed record LibxlPhysInfo(uint NrCpus, ulong TotalPages, ulong FreePages, uint ThreadsPerCore = 1, uint CoresPerSocket = 1, uint CpuKhz = 0)
{
    /// <summary>Sockets as Xen counts them (CPUs over threads and cores per socket), at least one.</summary>
    public uint Sockets => Math.Max(1, NrCpus / Math.Max(1, ThreadsPerCore * CoresPerSocket));
}

/// <summary>
/// A libxl context for this process. libxl must not own SIGCHLD here: .NET installs its own
/// handler, and libxl's default child mode then aborts on the first call that forks (domain
/// create and destroy run hotplug scripts). So right after allocation the context is put in
/// main-loop mode and every SIGCHLD is forwarded to it from a .NET signal registration (which runs
/// on a thread, not in the signal handler, as libxl requires). Calls block the calling thread.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LibxlContext : IDisposable
{
    private readonly LibxlContextHandle _handle;
    private readonly PosixSignalRegistration _sigchld;

    private LibxlContext(LibxlContextHandle handle)
    {
        _handle = handle;
        _sigchld = PosixSignalRegistration.Create(PosixSignal.SIGCHLD, OnSigchld);
    }

    /// <summary>xentoollog's XTL_WARN: libxl's warnings and errors only.</summary>
    public const int LogWarnings = LibxlLayout.XtlWarn;

    /// <summary>Opens a context; libxl's own messages go to stderr from <paramref name="logLevel"/> (XTL_DETAIL by default) up.</summary>
    /// <exception cref="DllNotFoundException">A Xen library is not installed.</exception>
    /// <exception cref="LibxlException">libxl_ctx_alloc failed (no hypervisor, no xenstored, not root).</exception>
    public static unsafe LibxlContext Open(int logLevel = LibxlLayout.XtlDetail)
    {
        var logger = XtlLoggerHandle.CreateOnStderr(logLevel);
        LibxlContextHandle handle;
        bool loggerAdded = false;
        try
        {
            logger.DangerousAddRef(ref loggerAdded);
            var rc = Libxl.libxl_ctx_alloc(out handle, LibxlLayout.Version, 0, logger.DangerousGetHandle());
            if (rc != 0 || handle.IsInvalid)
            {
                handle.Dispose();
                throw LibxlException.Create(rc != 0 ? rc : (int)LibxlError.Fail, nameof(Libxl.libxl_ctx_alloc));
            }
        }
        catch
        {
            if (loggerAdded)
            {
                logger.DangerousRelease();
            }
            logger.Dispose();
            throw;
        }
        logger.DangerousRelease();
        handle.Logger = logger;

        // The hooks are not copied by libxl: they live in native memory owned by the handle.
        var hooks = (byte*)NativeMemory.AllocZeroed(LibxlLayout.ChildprocHooksSize);
        *(int*)(hooks + LibxlLayout.ChildprocHooksChldowner) = LibxlLayout.SigchldOwnerMainloop;
        handle.Hooks = hooks;
        Libxl.libxl_childproc_setmode(handle, (nint)hooks, 0);
        return new LibxlContext(handle);
    }

    private void OnSigchld(PosixSignalContext context)
    {
        // The .NET runtime still reaps its own children; libxl reaps only its own on this call.
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            Libxl.libxl_childproc_sigchld_occurred(_handle);
        }
        catch (ObjectDisposedException)
        {
            // The context is being freed; its children were waited for by the call that made them.
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>Creates, builds and leaves paused a domain from libxl's JSON domain config (what <c>xl create -n</c> prints).</summary>
    public unsafe uint CreateDomain(string configJson)
    {
        var config = NativeMemory.AllocZeroed(LibxlLayout.DomainConfigSize);
        Libxl.libxl_domain_config_init((nint)config);
        try
        {
            LibxlException.ThrowIfFailed(Libxl.libxl_domain_config_from_json(_handle, (nint)config, configJson), nameof(Libxl.libxl_domain_config_from_json));
            LibxlException.ThrowIfFailed(Libxl.libxl_domain_create_new(_handle, (nint)config, out var domid, 0, 0), nameof(Libxl.libxl_domain_create_new));
            return domid;
        }
        finally
        {
            Libxl.libxl_domain_config_dispose((nint)config);
            NativeMemory.Free(config);
        }
    }

    /// <summary>
    /// Creates a domain from <paramref name="configJson"/> and restores into it the stream libxl
    /// reads from <paramref name="fd"/> (what <see cref="Suspend"/> wrote); the domain stays paused.
    /// </summary>
    public unsafe uint RestoreDomain(string configJson, int fd)
    {
        var config = NativeMemory.AllocZeroed(LibxlLayout.DomainConfigSize);
        var parameters = NativeMemory.AllocZeroed(LibxlLayout.RestoreParamsSize);
        Libxl.libxl_domain_config_init((nint)config);
        Libxl.libxl_domain_restore_params_init((nint)parameters);
        try
        {
            *(uint*)((byte*)parameters + LibxlLayout.RestoreParamsStreamVersion) = LibxlLayout.RestoreStreamVersion2;
            LibxlException.ThrowIfFailed(Libxl.libxl_domain_config_from_json(_handle, (nint)config, configJson), nameof(Libxl.libxl_domain_config_from_json));
            LibxlException.ThrowIfFailed(Libxl.libxl_domain_create_restore(_handle, (nint)config, out var domid, fd, -1, (nint)parameters, 0, 0),
                nameof(Libxl.libxl_domain_create_restore));
            return domid;
        }
        finally
        {
            Libxl.libxl_domain_restore_params_dispose((nint)parameters);
            Libxl.libxl_domain_config_dispose((nint)config);
            NativeMemory.Free(parameters);
            NativeMemory.Free(config);
        }
    }

    /// <summary>Suspends the guest and writes its memory and device state to <paramref name="fd"/> (libxl's stream v2).</summary>
    public void Suspend(uint domid, int fd) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_suspend(_handle, domid, fd, 0, 0), nameof(Libxl.libxl_domain_suspend), domid);

    /// <summary>Asks the guest to suspend itself, saving nothing; <see cref="LibxlNoParavirtException"/> when it cannot hear.</summary>
    public void RequestSuspend(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_suspend_only(_handle, domid, 0), nameof(Libxl.libxl_domain_suspend_only), domid);

    /// <summary>Hot-plugs a disk described as libxl's JSON (an entry of the domain config's "disks") into a running domain.</summary>
    public void AddDisk(uint domid, string diskJson) =>
        WithDevice(LibxlLayout.DeviceDiskSize, Libxl.libxl_device_disk_init, Libxl.libxl_device_disk_dispose,
            disk => Libxl.libxl_device_disk_from_json(_handle, disk, diskJson), nameof(Libxl.libxl_device_disk_from_json),
            disk => Libxl.libxl_device_disk_add(_handle, domid, disk, 0), nameof(Libxl.libxl_device_disk_add), domid);

    /// <summary>Unplugs the guest's disk <paramref name="vdev"/>: with the guest's consent, or at once when <paramref name="force"/>.</summary>
    public void RemoveDisk(uint domid, string vdev, bool force) =>
        WithDevice(LibxlLayout.DeviceDiskSize, Libxl.libxl_device_disk_init, Libxl.libxl_device_disk_dispose,
            disk => Libxl.libxl_vdev_to_device_disk(_handle, domid, vdev, disk), nameof(Libxl.libxl_vdev_to_device_disk),
            disk => force ? Libxl.libxl_device_disk_destroy(_handle, domid, disk, 0) : Libxl.libxl_device_disk_remove(_handle, domid, disk, 0),
            force ? nameof(Libxl.libxl_device_disk_destroy) : nameof(Libxl.libxl_device_disk_remove), domid);

    /// <summary>Hot-plugs a network interface described as libxl's JSON (an entry of the domain config's "nics").</summary>
    public void AddNic(uint domid, string nicJson) =>
        WithDevice(LibxlLayout.DeviceNicSize, Libxl.libxl_device_nic_init, Libxl.libxl_device_nic_dispose,
            nic => Libxl.libxl_device_nic_from_json(_handle, nic, nicJson), nameof(Libxl.libxl_device_nic_from_json),
            nic => Libxl.libxl_device_nic_add(_handle, domid, nic, 0), nameof(Libxl.libxl_device_nic_add), domid);

    public void RemoveNic(uint domid, int devid, bool force) =>
        WithDevice(LibxlLayout.DeviceNicSize, Libxl.libxl_device_nic_init, Libxl.libxl_device_nic_dispose,
            nic => Libxl.libxl_devid_to_device_nic(_handle, domid, devid, nic), nameof(Libxl.libxl_devid_to_device_nic),
            nic => force ? Libxl.libxl_device_nic_destroy(_handle, domid, nic, 0) : Libxl.libxl_device_nic_remove(_handle, domid, nic, 0),
            force ? nameof(Libxl.libxl_device_nic_destroy) : nameof(Libxl.libxl_device_nic_remove), domid);

    /// <summary>A device struct in native memory: initialised, described, acted on, disposed.</summary>
    private static unsafe void WithDevice(int size, Action<nint> init, Action<nint> dispose,
        Func<nint, int> describe, string describeCall, Func<nint, int> act, string actCall, uint domid)
    {
        var device = (nint)NativeMemory.AllocZeroed((nuint)size);
        init(device);
        try
        {
            LibxlException.ThrowIfFailed(describe(device), describeCall, domid);
            LibxlException.ThrowIfFailed(act(device), actCall, domid);
        }
        finally
        {
            dispose(device);
            NativeMemory.Free((void*)device);
        }
    }

    public void Pause(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_pause(_handle, domid, 0), nameof(Libxl.libxl_domain_pause), domid);

    public void Unpause(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_unpause(_handle, domid, 0), nameof(Libxl.libxl_domain_unpause), domid);

    /// <summary>Asks the guest to power off (through its PV control node); <see cref="LibxlNoParavirtException"/> when it cannot hear.</summary>
    public void RequestShutdown(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_shutdown(_handle, domid, 0), nameof(Libxl.libxl_domain_shutdown), domid);

    public void RequestReboot(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_reboot(_handle, domid, 0), nameof(Libxl.libxl_domain_reboot), domid);

    /// <summary>Destroys the domain and its devices (runs the hotplug scripts' remove, kills its qemu).</summary>
    public void Destroy(uint domid) => LibxlException.ThrowIfFailed(Libxl.libxl_domain_destroy(_handle, domid, 0), nameof(Libxl.libxl_domain_destroy), domid);

    public IReadOnlyList<LibxlDomainInfo> ListDomains()
    {
        var list = Libxl.libxl_list_domain(_handle, out var count);
        if (list == 0)
        {
            throw new LibxlException(nameof(Libxl.libxl_list_domain), (int)LibxlError.Fail);
        }
        try
        {
            var result = new LibxlDomainInfo[count];
            for (var i = 0; i < count; i++)
            {
                result[i] = ReadDominfo(list + (i * LibxlLayout.DominfoSize));
            }
            return result;
        }
        finally
        {
            Libxl.libxl_dominfo_list_free(list, count);
        }
    }

    /// <summary>The domain, or null when there is none with this domid.</summary>
    public unsafe LibxlDomainInfo? TryGetDomain(uint domid)
    {
        var info = NativeMemory.AllocZeroed(LibxlLayout.DominfoSize);
        Libxl.libxl_dominfo_init((nint)info);
        try
        {
            var rc = Libxl.libxl_domain_info(_handle, (nint)info, domid);
            if (rc == (int)LibxlError.DomainNotFound)
            {
                return null;
            }
            LibxlException.ThrowIfFailed(rc, nameof(Libxl.libxl_domain_info), domid);
            return ReadDominfo((nint)info);
        }
        finally
        {
            Libxl.libxl_dominfo_dispose((nint)info);
            NativeMemory.Free(info);
        }
    }

    public string? DomainName(uint domid)
    {
        var name = Libxl.libxl_domid_to_name(_handle, domid);
        if (name == 0)
        {
            return null;
        }
        try
        {
            return Marshal.PtrToStringUTF8(name);
        }
        finally
        {
            unsafe
            {
                NativeMemory.Free((void*)name);
            }
        }
    }

    public unsafe LibxlPhysInfo GetPhysInfo()
    {
        var info = (byte*)NativeMemory.AllocZeroed(LibxlLayout.PhysinfoSize);
        Libxl.libxl_physinfo_init((nint)info);
        try
        {
            LibxlException.ThrowIfFailed(Libxl.libxl_get_physinfo(_handle, (nint)info), nameof(Libxl.libxl_get_physinfo));
            return new LibxlPhysInfo(
                *(uint*)(info + LibxlLayout.PhysinfoNrCpus),
                *(ulong*)(info + LibxlLayout.PhysinfoTotalPages),
                *(ulong*)(info + LibxlLayout.PhysinfoFreePages),
                *(uint*)(info + LibxlLayout.PhysinfoThreadsPerCore),
                *(uint*)(info + LibxlLayout.PhysinfoCoresPerSocket),
                *(uint*)(info + LibxlLayout.PhysinfoCpuKhz));
        }
        finally
        {
            Libxl.libxl_physinfo_dispose((nint)info);
            NativeMemory.Free(info);
        }
    }

    /// <summary>Memory free for new domains, KiB (libxl_get_free_memory: free pages less Xen's slack).</summary>
    public ulong GetFreeMemoryKib()
    {
        LibxlException.ThrowIfFailed(Libxl.libxl_get_free_memory(_handle, out var kib), nameof(Libxl.libxl_get_free_memory));
        return kib;
    }

    public ulong GetMemoryTargetKib(uint domid)
    {
        LibxlException.ThrowIfFailed(Libxl.libxl_get_memory_target(_handle, domid, out var kib), nameof(Libxl.libxl_get_memory_target), domid);
        return kib;
    }

    /// <summary>Sets the balloon target (absolute, enforced: the domain's maximum follows).</summary>
    public void SetMemoryTargetKib(uint domid, long targetKib) =>
        LibxlException.ThrowIfFailed(Libxl.libxl_set_memory_target(_handle, domid, targetKib, relative: 0, enforce: 1), nameof(Libxl.libxl_set_memory_target), domid);

    /// <summary>Brings vCPUs 0..online-1 online and the rest (up to <paramref name="vcpusMax"/>) offline.</summary>
    public unsafe void SetVcpusOnline(uint domid, int online, int vcpusMax)
    {
        var bitmap = NativeMemory.AllocZeroed(LibxlLayout.BitmapSize);
        Libxl.libxl_bitmap_init((nint)bitmap);
        try
        {
            LibxlException.ThrowIfFailed(Libxl.libxl_bitmap_alloc(_handle, (nint)bitmap, vcpusMax), nameof(Libxl.libxl_bitmap_alloc));
            for (var cpu = 0; cpu < online; cpu++)
            {
                Libxl.libxl_bitmap_set((nint)bitmap, cpu);
            }
            LibxlException.ThrowIfFailed(Libxl.libxl_set_vcpuonline(_handle, domid, (nint)bitmap, 0), nameof(Libxl.libxl_set_vcpuonline), domid);
        }
        finally
        {
            Libxl.libxl_bitmap_dispose((nint)bitmap);
            NativeMemory.Free(bitmap);
        }
    }

    internal static unsafe LibxlDomainInfo ReadDominfo(nint address)
    {
        var p = (byte*)address;
        return new LibxlDomainInfo(
            // libxl_uuid holds the 16 bytes in RFC 4122 (big-endian) order, as its string form.
            new Guid(new ReadOnlySpan<byte>(p + LibxlLayout.DominfoUuid, LibxlLayout.DominfoUuidSize), bigEndian: true),
            *(uint*)(p + LibxlLayout.DominfoDomid),
            p[LibxlLayout.DominfoRunning] != 0,
            p[LibxlLayout.DominfoBlocked] != 0,
            p[LibxlLayout.DominfoPaused] != 0,
            p[LibxlLayout.DominfoShutdown] != 0,
            p[LibxlLayout.DominfoDying] != 0,
            *(int*)(p + LibxlLayout.DominfoShutdownReason),
            *(ulong*)(p + LibxlLayout.DominfoCurrentMemkb),
            *(ulong*)(p + LibxlLayout.DominfoMaxMemkb),
            *(ulong*)(p + LibxlLayout.DominfoCpuTime),
            *(uint*)(p + LibxlLayout.DominfoVcpuMaxId),
            *(uint*)(p + LibxlLayout.DominfoVcpuOnline),
            *(int*)(p + LibxlLayout.DominfoDomainType));
    }

    public void Dispose()
    {
        // No forwarding once the ctx is going; a forward in flight holds a reference and delays the free.
        _sigchld.Dispose();
        _handle.Dispose();
    }
}
