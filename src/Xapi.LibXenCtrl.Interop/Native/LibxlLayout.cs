namespace Xapi.LibXenCtrl.Interop.Native;

/// <summary>
/// Every size, offset and constant of Xen 4.17's headers the bindings rely on (x86-64). Nothing
/// else of libxl's structs is touched: the domain config travels as JSON. <see cref="Facts"/>
/// names each number as tests/Xapi.LibXenCtrl.Interop.Tests/layout-probe.c prints it, and a test
/// compiles that probe against libxen-dev's headers and compares the two, both ways.
/// </summary>
internal static class LibxlLayout
{
    public const int Version = 0; // LIBXL_VERSION
    public const uint XsTransactionNone = 0; // XBT_NULL
    public const int XtlDetail = 3;
    public const int XtlWarn = 7;

    public const int DomainConfigSize = 1288;

    public const int ChildprocHooksSize = 24;
    public const int ChildprocHooksChldowner = 0;
    public const int ChildprocHooksChldownerSize = 4;
    public const int ChildprocHooksForkReplacement = 8;
    public const int ChildprocHooksReapedCallback = 16;
    public const int SigchldOwnerMainloop = 1;

    public const int PhysinfoSize = 128;
    public const int PhysinfoThreadsPerCore = 0;
    public const int PhysinfoCoresPerSocket = 4;
    public const int PhysinfoNrCpus = 12;
    public const int PhysinfoCpuKhz = 16;
    public const int PhysinfoTotalPages = 24;
    public const int PhysinfoFreePages = 32;

    public const int DominfoSize = 120;
    public const int DominfoUuid = 0;
    public const int DominfoUuidSize = 16;
    public const int DominfoDomid = 16;
    public const int DominfoRunning = 32;
    public const int DominfoBlocked = 33;
    public const int DominfoPaused = 34;
    public const int DominfoShutdown = 35;
    public const int DominfoDying = 36;
    public const int DominfoShutdownReason = 40;
    public const int DominfoCurrentMemkb = 56;
    public const int DominfoMaxMemkb = 80;
    public const int DominfoCpuTime = 88;
    public const int DominfoVcpuMaxId = 96;
    public const int DominfoVcpuOnline = 100;
    public const int DominfoDomainType = 112;

    public const int DeviceDiskSize = 144;
    public const int DeviceNicSize = 504;

    public const int RestoreParamsSize = 24;
    public const int RestoreParamsStreamVersion = 4;

    /// <summary>The stream libxl_domain_suspend writes (libxl's migration stream v2).</summary>
    public const uint RestoreStreamVersion2 = 2;

    public const int BitmapSize = 16;
    public const int BitmapSizeField = 0;
    public const int BitmapMap = 8;

    public const int DomainTypeHvm = 1;
    public const int DomainTypePv = 2;
    public const int DomainTypePvh = 3;

    public const int ShutdownReasonPoweroff = 0;
    public const int ShutdownReasonReboot = 1;
    public const int ShutdownReasonSuspend = 2;
    public const int ShutdownReasonCrash = 3;
    public const int ShutdownReasonWatchdog = 4;
    public const int ShutdownReasonSoftReset = 5;

    private const int Bool = 1;
    private const int Uint32 = 4;
    private const int Uint64 = 8;
    private const int Enum = 4;

    /// <summary>The numbers above under the names the C probe prints (<c>sizeof(T.f)</c> is a field's width).</summary>
    public static IReadOnlyDictionary<string, long> Facts { get; } = BuildFacts();

    private static Dictionary<string, long> BuildFacts()
    {
        var facts = new Dictionary<string, long>
        {
            ["sizeof(libxl_domain_config)"] = DomainConfigSize,
            ["sizeof(libxl_childproc_hooks)"] = ChildprocHooksSize,
            ["offsetof(libxl_childproc_hooks.chldowner)"] = ChildprocHooksChldowner,
            ["sizeof(libxl_childproc_hooks.chldowner)"] = ChildprocHooksChldownerSize,
            ["offsetof(libxl_childproc_hooks.fork_replacement)"] = ChildprocHooksForkReplacement,
            ["offsetof(libxl_childproc_hooks.reaped_callback)"] = ChildprocHooksReapedCallback,
            ["libxl_sigchld_owner_mainloop"] = SigchldOwnerMainloop,
            ["sizeof(libxl_physinfo)"] = PhysinfoSize,
            ["offsetof(libxl_physinfo.threads_per_core)"] = PhysinfoThreadsPerCore,
            ["sizeof(libxl_physinfo.threads_per_core)"] = Uint32,
            ["offsetof(libxl_physinfo.cores_per_socket)"] = PhysinfoCoresPerSocket,
            ["sizeof(libxl_physinfo.cores_per_socket)"] = Uint32,
            ["offsetof(libxl_physinfo.nr_cpus)"] = PhysinfoNrCpus,
            ["offsetof(libxl_physinfo.cpu_khz)"] = PhysinfoCpuKhz,
            ["sizeof(libxl_physinfo.cpu_khz)"] = Uint32,
            ["sizeof(libxl_physinfo.nr_cpus)"] = Uint32,
            ["offsetof(libxl_physinfo.total_pages)"] = PhysinfoTotalPages,
            ["sizeof(libxl_physinfo.total_pages)"] = Uint64,
            ["offsetof(libxl_physinfo.free_pages)"] = PhysinfoFreePages,
            ["sizeof(libxl_physinfo.free_pages)"] = Uint64,
            ["sizeof(libxl_dominfo)"] = DominfoSize,
            ["offsetof(libxl_dominfo.uuid)"] = DominfoUuid,
            ["sizeof(libxl_dominfo.uuid)"] = DominfoUuidSize,
            ["offsetof(libxl_dominfo.domid)"] = DominfoDomid,
            ["sizeof(libxl_dominfo.domid)"] = Uint32,
            ["offsetof(libxl_dominfo.running)"] = DominfoRunning,
            ["offsetof(libxl_dominfo.blocked)"] = DominfoBlocked,
            ["offsetof(libxl_dominfo.paused)"] = DominfoPaused,
            ["offsetof(libxl_dominfo.shutdown)"] = DominfoShutdown,
            ["offsetof(libxl_dominfo.dying)"] = DominfoDying,
            ["sizeof(libxl_dominfo.paused)"] = Bool,
            ["offsetof(libxl_dominfo.shutdown_reason)"] = DominfoShutdownReason,
            ["sizeof(libxl_dominfo.shutdown_reason)"] = Enum,
            ["offsetof(libxl_dominfo.current_memkb)"] = DominfoCurrentMemkb,
            ["sizeof(libxl_dominfo.current_memkb)"] = Uint64,
            ["offsetof(libxl_dominfo.max_memkb)"] = DominfoMaxMemkb,
            ["sizeof(libxl_dominfo.max_memkb)"] = Uint64,
            ["offsetof(libxl_dominfo.cpu_time)"] = DominfoCpuTime,
            ["sizeof(libxl_dominfo.cpu_time)"] = Uint64,
            ["offsetof(libxl_dominfo.vcpu_max_id)"] = DominfoVcpuMaxId,
            ["sizeof(libxl_dominfo.vcpu_max_id)"] = Uint32,
            ["offsetof(libxl_dominfo.vcpu_online)"] = DominfoVcpuOnline,
            ["sizeof(libxl_dominfo.vcpu_online)"] = Uint32,
            ["offsetof(libxl_dominfo.domain_type)"] = DominfoDomainType,
            ["sizeof(libxl_dominfo.domain_type)"] = Enum,
            ["sizeof(libxl_device_disk)"] = DeviceDiskSize,
            ["sizeof(libxl_device_nic)"] = DeviceNicSize,
            ["sizeof(libxl_domain_restore_params)"] = RestoreParamsSize,
            ["offsetof(libxl_domain_restore_params.stream_version)"] = RestoreParamsStreamVersion,
            ["sizeof(libxl_domain_restore_params.stream_version)"] = Uint32,
            ["sizeof(libxl_bitmap)"] = BitmapSize,
            ["offsetof(libxl_bitmap.size)"] = BitmapSizeField,
            ["sizeof(libxl_bitmap.size)"] = Uint32,
            ["offsetof(libxl_bitmap.map)"] = BitmapMap,
            ["LIBXL_VERSION"] = Version,
            ["XBT_NULL"] = XsTransactionNone,
            ["XTL_DETAIL"] = XtlDetail,
            ["XTL_WARN"] = XtlWarn,
            ["LIBXL_DOMAIN_TYPE_HVM"] = DomainTypeHvm,
            ["LIBXL_DOMAIN_TYPE_PV"] = DomainTypePv,
            ["LIBXL_DOMAIN_TYPE_PVH"] = DomainTypePvh,
            ["LIBXL_SHUTDOWN_REASON_POWEROFF"] = ShutdownReasonPoweroff,
            ["LIBXL_SHUTDOWN_REASON_REBOOT"] = ShutdownReasonReboot,
            ["LIBXL_SHUTDOWN_REASON_SUSPEND"] = ShutdownReasonSuspend,
            ["LIBXL_SHUTDOWN_REASON_CRASH"] = ShutdownReasonCrash,
            ["LIBXL_SHUTDOWN_REASON_WATCHDOG"] = ShutdownReasonWatchdog,
            ["LIBXL_SHUTDOWN_REASON_SOFT_RESET"] = ShutdownReasonSoftReset,
        };
        foreach (var (error, name) in LibxlException.CNames)
        {
            facts[name] = (int)error;
        }
        return facts;
    }
}
