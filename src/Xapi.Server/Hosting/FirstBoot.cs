using System.Security.Cryptography;
using System.Text;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Sessions;

namespace Xapi.Server.Hosting;

/// <summary>
/// Creates what a freshly installed XCP host has: pool, host and its metrics and CPUs, the
/// control domain, the management network and PIF, SM drivers, roles and VM templates.
/// Object identities derive from the installation uuid kept in the data dir, so they stay
/// the same across restarts.
/// </summary>
public sealed class FirstBoot
{
    public const string ProductVersion = "8.2.1";
    public const string PlatformVersion = "3.2.1";

    private readonly string _installationUuid;

    public FirstBoot(string installationUuid) => _installationUuid = installationUuid;

    public string InstallationUuid => _installationUuid;

    public string HostRef => Ref("host");

    public string PoolRef => Ref("pool");

    /// <summary>A stable identifier for one first-boot object of this installation.</summary>
    private string StableId(string key)
    {
        var hash = MD5.HashData(Encoding.UTF8.GetBytes(_installationUuid + "/" + key));
        hash[6] = (byte)((hash[6] & 0x0F) | 0x30); // version 3, name-based
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash, bigEndian: true).ToString("D");
    }

    private string Ref(string key) => "OpaqueRef:" + StableId("ref/" + key);

    /// <summary>The ref of a first-boot object made outside this class (storage), stable across restarts.</summary>
    public string StableRef(string key) => Ref(key);

    public string StableUuid(string key) => Uuid(key);

    private string Uuid(string key) => key == "host" ? _installationUuid : StableId("uuid/" + key);

    /// <summary>
    /// Makes the role records what this build's datamodel says: real hosts serve roles from a
    /// static table, so they are brought up to date at every start, not only the first.
    /// </summary>
    public static void SynchronizeRoles(XapiDatabase database) => database.Write(tx =>
    {
        var wanted = Rbac.All.ToDictionary(r => r.Ref, StringComparer.Ordinal);
        foreach (var role in tx.All<RoleRecord>().ToList())
        {
            if (!wanted.Remove(role.Ref.Value, out var entry))
            {
                tx.Delete(role.Ref);
            }
            else if (role.NameLabel != entry.NameLabel || role.NameDescription != entry.Description || role.IsInternal != entry.IsInternal
                     || !role.Subroles.Select(r => r.Value).SequenceEqual(entry.Subroles))
            {
                tx.Update(role.Ref, values => Describe(values, entry));
            }
        }
        foreach (var entry in wanted.Values)
        {
            tx.CreateRole(values =>
            {
                values.Uuid = entry.Uuid;
                Describe(values, entry);
            }, new RoleRef(entry.Ref));
        }
    });

    private static void Describe(RoleValues values, Rbac.RoleEntry entry)
    {
        values.NameLabel = entry.NameLabel;
        values.NameDescription = entry.Description;
        values.Subroles = entry.Subroles.Select(r => new RoleRef(r)).ToArray();
        values.IsInternal = entry.IsInternal;
    }

    public void Populate(XapiDatabase database, HostFacts facts)
    {
        database.Write(tx =>
        {
            var now = DateTime.UtcNow;
            static ValueMap Map(params (string Key, object? Value)[] pairs) =>
                ValueMap.FromPairs(pairs.Select(p => new KeyValuePair<object, object?>(p.Key, p.Value)));
            var host = new HostRef(Ref("host"));
            var dom0 = new VMRef(Ref("dom0"));
            var invariant = System.Globalization.CultureInfo.InvariantCulture;

            tx.CreateHostMetrics(metrics =>
            {
                metrics.Uuid = Uuid("host_metrics");
                metrics.MemoryTotal = facts.MemoryTotal;
                metrics.MemoryFree = facts.MemoryFree;
                metrics.Live = true;
                metrics.LastUpdated = now;
            }, new HostMetricsRef(Ref("host_metrics")));

            var softwareVersion = Map(
                (SoftwareVersionKeys.ProductVersion, ProductVersion),
                ("product_version_text", ProductVersion),
                ("product_version_text_short", ProductVersion),
                (SoftwareVersionKeys.PlatformVersion, PlatformVersion),
                (SoftwareVersionKeys.ProductBrand, "XCP-dotnet"),
                (SoftwareVersionKeys.PlatformName, "XCP"),
                ("build_number", "release/dotnet/1"),
                (SoftwareVersionKeys.Xapi, "24.19"),
                ("xapi_build", "24.19.0"),
                ("xen", "4.17.0"),
                ("linux", Environment.OSVersion.Version.ToString()),
                ("hostname", facts.Hostname),
                ("date", "2026-11-22"),
                (SoftwareVersionKeys.DbSchema, "5.780"),
                ("network_backend", "bridge"));

            tx.CreateHost(h =>
            {
                h.Uuid = Uuid("host");
                h.NameLabel = facts.Hostname;
                h.NameDescription = "Default install";
                h.APIVersionMajor = ApiSchema.ApiVersionMajor;
                h.APIVersionMinor = ApiSchema.ApiVersionMinor;
                h.APIVersionVendor = "XenSource";
                h.APIVersionVendorImplementation = ValueMap.Empty;
                h.Enabled = true;
                h.SoftwareVersion = softwareVersion;
                h.OtherConfig = Map(("agent_start_time", $"{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}."), ("iscsi_iqn", ""));
                h.Capabilities = ["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64"];
                h.CpuConfiguration = ValueMap.Empty;
                h.SchedPolicy = "credit";
                h.SupportedBootloaders = ["pygrub", "eliloader"];
                h.Logging = ValueMap.Empty;
                h.SuspendImageSr = SRRef.Null;
                h.CrashDumpSr = SRRef.Null;
                h.CpuInfo = Map(
                    ("cpu_count", facts.CpuCount.ToString(invariant)),
                    ("socket_count", facts.SocketCount.ToString(invariant)),
                    ("vendor", facts.CpuVendor),
                    ("speed", facts.CpuSpeedMhz.ToString(invariant)),
                    ("modelname", facts.CpuModelName),
                    ("family", facts.CpuFamily),
                    ("model", facts.CpuModel),
                    ("stepping", facts.CpuStepping),
                    ("flags", facts.CpuFlags),
                    ("features", ""),
                    ("features_pv", ""),
                    ("features_hvm", ""));
                h.Hostname = facts.Hostname;
                h.Address = facts.Address;
                h.Metrics = new HostMetricsRef(Ref("host_metrics"));
                h.LicenseParams = Map(("sku_type", "free"), ("restrict_pool_size", "false"));
                h.Edition = "xcp-ng";
                h.Editions = ["xcp-ng"];
                h.BiosStrings = Map(("bios-vendor", "Xen"), ("system-manufacturer", "Xen"));
                h.ControlDomain = dom0;
                h.IscsiIqn = "";
                h.Display = HostDisplay.Enabled;
                h.TlsVerificationEnabled = true;
            }, host);

            for (var i = 0; i < facts.CpuCount; i++)
            {
                var number = i;
                tx.CreateHostCpu(cpu =>
                {
                    cpu.Uuid = Uuid($"host_cpu/{number}");
                    cpu.Host = host;
                    cpu.Number = number;
                    cpu.Vendor = facts.CpuVendor;
                    cpu.Speed = facts.CpuSpeedMhz;
                    cpu.Modelname = facts.CpuModelName;
                    cpu.Family = long.TryParse(facts.CpuFamily, out var family) ? family : 0L;
                    cpu.Model = long.TryParse(facts.CpuModel, out var model) ? model : 0L;
                    cpu.Stepping = facts.CpuStepping;
                    cpu.Flags = facts.CpuFlags;
                    cpu.Features = "";
                    cpu.Utilisation = 0.0;
                }, new HostCpuRef(Ref($"host_cpu/{number}")));
            }

            tx.CreatePool(pool =>
            {
                pool.Uuid = Uuid("pool");
                pool.NameLabel = "";
                pool.NameDescription = "";
                pool.Master = host;
                pool.DefaultSR = SRRef.Null;
                pool.SuspendImageSR = SRRef.Null;
                pool.CrashDumpSR = SRRef.Null;
                pool.OtherConfig = Map(("memory-ratio-hvm", "0.25"), ("memory-ratio-pv", "0.25"));
                pool.CpuInfo = Map(("cpu_count", facts.CpuCount.ToString(invariant)), ("vendor", facts.CpuVendor));
                pool.Restrictions = Map(("restrict_pool_size", "false"));
            }, new PoolRef(Ref("pool")));

            var dom0Memory = facts.ControlDomainMemory ?? Math.Min(facts.MemoryTotal, 4L << 30);
            var dom0Vcpus = facts.ControlDomainVcpus ?? facts.CpuCount;
            tx.CreateVMMetrics(metrics =>
            {
                metrics.Uuid = Uuid("dom0/metrics");
                metrics.MemoryActual = dom0Memory;
                metrics.VCPUsNumber = dom0Vcpus;
                metrics.VCPUsCPU = ValueMap.Empty;
                metrics.VCPUsParams = ValueMap.Empty;
                metrics.VCPUsFlags = ValueMap.Empty;
                metrics.State = [];
                metrics.StartTime = now;
                metrics.InstallTime = now;
                metrics.LastUpdated = now;
            }, new VMMetricsRef(Ref("dom0/metrics")));
            tx.CreateVM(vm =>
            {
                vm.Uuid = Uuid("dom0");
                DescribeVm(vm, $"Control domain on host: {facts.Hostname}", "The domain which manages physical devices and manages other domains",
                    dom0Memory, dom0Vcpus, isTemplate: false);
                vm.PowerState = VmPowerState.Running;
                vm.IsControlDomain = true;
                vm.ResidentOn = host;
                vm.Domid = 0;
                vm.Metrics = new VMMetricsRef(Ref("dom0/metrics"));
                vm.DomainType = DomainType.Pv;
                vm.OtherConfig = Map(("storage_driver_domain", dom0.Value), ("is_system_domain", "true"));
                vm.AllowedOperations = [VmOperations.ChangingDynamicRange, VmOperations.MetadataExport, VmOperations.DataSourceOp];
            }, dom0);

            tx.CreatePIFMetrics(metrics =>
            {
                metrics.Uuid = Uuid("pif/metrics");
                metrics.Carrier = true;
                metrics.VendorId = "";
                metrics.VendorName = "";
                metrics.DeviceId = "";
                metrics.DeviceName = "";
                metrics.Speed = 1000;
                metrics.Duplex = true;
                metrics.PciBusPath = "";
                metrics.LastUpdated = now;
            }, new PIFMetricsRef(Ref("pif/metrics")));
            var management = new NetworkRef(Ref("network/management"));
            tx.CreateNetwork(network =>
            {
                network.Uuid = Uuid("network/management");
                network.NameLabel = $"Pool-wide network associated with {facts.ManagementDevice}";
                network.NameDescription = "";
                network.MTU = 1500;
                network.OtherConfig = ValueMap.Empty;
                network.Bridge = "xenbr0";
                network.Managed = true;
            }, management);
            tx.CreatePIF(pif =>
            {
                pif.Uuid = Uuid("pif/management");
                pif.Device = facts.ManagementDevice;
                pif.Network = management;
                pif.Host = host;
                pif.MAC = facts.Mac;
                pif.MTU = 1500;
                pif.VLAN = -1;
                pif.Metrics = new PIFMetricsRef(Ref("pif/metrics"));
                pif.Physical = true;
                pif.CurrentlyAttached = true;
                pif.IpConfigurationMode = IpConfigurationMode.DHCP;
                pif.IP = facts.Address;
                pif.Netmask = "255.255.255.0";
                pif.Management = true;
                pif.Managed = true;
            }, new PIFRef(Ref("pif/management")));

            foreach (var template in Templates)
            {
                tx.CreateVM(vm =>
                {
                    vm.Uuid = Uuid("template/" + template.Name);
                    DescribeVm(vm, template.Name, template.Description, template.MemoryBytes, template.Vcpus, isTemplate: true);
                    vm.OtherConfig = Map(
                        ("default_template", "true"),
                        ("linux_template", template.Linux ? "true" : "false"),
                        ("install-methods", template.InstallMethods),
                        ("disks", $"<provision><disk device=\"0\" size=\"{template.DiskBytes}\" sr=\"\" bootable=\"true\" type=\"system\"/></provision>"),
                        ("base_template_name", template.Name));
                    vm.Recommendations = $"<restrictions><restriction field=\"memory-static-max\" max=\"{256L << 30}\"/><restriction field=\"vcpus-max\" max=\"64\"/><restriction property=\"number-of-vbds\" max=\"255\"/><restriction property=\"number-of-vifs\" max=\"7\"/></restrictions>";
                    vm.ReferenceLabel = template.ReferenceLabel;
                }, new VMRef(Ref("template/" + template.Name)));
            }
        });
    }


    private sealed record Template(string Name, string Description, long MemoryBytes, long Vcpus, long DiskBytes, bool Linux, string InstallMethods, string ReferenceLabel);

    private static readonly Template[] Templates =
    [
        new("Debian Bookworm 12", "Template that allows VM installation from Xen-aware Debian-based distros.", 1L << 30, 1, 10L << 30, true, "cdrom,nfs,http,ftp", "debian-12"),
        new("Ubuntu Jammy Jellyfish 22.04", "Template that allows VM installation from Xen-aware Ubuntu-based distros.", 2L << 30, 2, 10L << 30, true, "cdrom,nfs,http,ftp", "ubuntu-22.04"),
        new("Ubuntu Noble Numbat 24.04", "Template that allows VM installation from Xen-aware Ubuntu-based distros.", 2L << 30, 2, 16L << 30, true, "cdrom,nfs,http,ftp", "ubuntu-24.04"),
        new("Rocky Linux 9", "Template for Rocky Linux 9 guests.", 2L << 30, 2, 16L << 30, true, "cdrom,nfs,http,ftp", "rocky-9"),
        new("CentOS Stream 9", "Template for CentOS Stream 9 guests.", 2L << 30, 2, 16L << 30, true, "cdrom,nfs,http,ftp", "centos-stream-9"),
        new("Other install media", "Template that allows VM installation from install media.", 1L << 30, 1, 16L << 30, false, "cdrom", "other-install-media"),
    ];

    private static void DescribeVm(VMValues vm, string name, string description, long memory, long vcpus, bool isTemplate)
    {
        vm.NameLabel = name;
        vm.NameDescription = description;
        vm.UserVersion = 1;
        vm.IsATemplate = isTemplate;
        vm.IsDefaultTemplate = isTemplate;
        vm.PowerState = VmPowerState.Halted;
        vm.MemoryStaticMax = memory;
        vm.MemoryDynamicMax = memory;
        vm.MemoryDynamicMin = memory;
        vm.MemoryStaticMin = Math.Min(memory, 512L << 20);
        vm.MemoryTarget = memory;
        vm.VCPUsMax = vcpus;
        vm.VCPUsAtStartup = vcpus;
        vm.VCPUsParams = ValueMap.Empty;
        vm.ActionsAfterShutdown = OnNormalExit.Destroy;
        vm.ActionsAfterReboot = OnNormalExit.Restart;
        vm.ActionsAfterCrash = OnCrashBehaviour.Restart;
        vm.HVMBootPolicy = isTemplate ? "BIOS order" : "";
        vm.HVMBootParams = isTemplate ? ValueMap.FromPairs([new("order", "cdn")]) : ValueMap.Empty;
        vm.Platform = isTemplate
            ? ValueMap.FromPairs([new("viridian", "false"), new("acpi", "1"), new("apic", "true"), new("pae", "true"), new("nx", "true"), new("device-model", "qemu-upstream-compat")])
            : ValueMap.Empty;
        vm.PVBootloader = "";
        vm.PVKernel = "";
        vm.PVRamdisk = "";
        vm.PVArgs = "";
        vm.PVBootloaderArgs = "";
        vm.PVLegacyArgs = "";
        vm.PCIBus = "";
        vm.OtherConfig = ValueMap.Empty;
        vm.Affinity = Xapi.Model.HostRef.Null;
        vm.ResidentOn = Xapi.Model.HostRef.Null;
        vm.Domid = -1;
        vm.DomainType = isTemplate ? DomainType.Hvm : DomainType.Pv;
        vm.Recommendations = "";
        vm.HaAlwaysRun = false;
        vm.HaRestartPriority = "";
        vm.Tags = [];
        vm.XenstoreData = ValueMap.Empty;
        vm.AllowedOperations = isTemplate
            ?
            [
                VmOperations.Clone, VmOperations.Copy, VmOperations.Export, VmOperations.Provision, VmOperations.Destroy,
                VmOperations.ChangingStaticRange, VmOperations.ChangingDynamicRange, VmOperations.ChangingVCPUs, VmOperations.MetadataExport,
            ]
            : [];
    }
}
