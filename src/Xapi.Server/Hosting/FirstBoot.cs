using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
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

    public FirstBoot(string dataDir)
    {
        var path = Path.Combine(dataDir, "inventory.json");
        if (File.Exists(path))
        {
            var inventory = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(path)) ?? [];
            _installationUuid = inventory["INSTALLATION_UUID"];
        }
        else
        {
            _installationUuid = Guid.NewGuid().ToString("D");
            File.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, string> { ["INSTALLATION_UUID"] = _installationUuid }));
        }
    }

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
            void Create(string cls, string key, Dictionary<string, object?> values)
            {
                values["uuid"] = Uuid(key);
                tx.Create(ApiSchema.Class(cls), values, Ref(key));
            }
            static ValueMap Map(params (string Key, object? Value)[] pairs) =>
                ValueMap.FromPairs(pairs.Select(p => new KeyValuePair<object, object?>(p.Key, p.Value)));

            Create("host_metrics", "host_metrics", new()
            {
                ["memory_total"] = facts.MemoryTotal,
                ["memory_free"] = facts.MemoryFree,
                ["live"] = true,
                ["last_updated"] = now,
            });

            var softwareVersion = Map(
                ("product_version", ProductVersion),
                ("product_version_text", ProductVersion),
                ("product_version_text_short", ProductVersion),
                ("platform_version", PlatformVersion),
                ("product_brand", "XCP-dotnet"),
                ("platform_name", "XCP"),
                ("build_number", "release/dotnet/1"),
                ("xapi", "24.19"),
                ("xapi_build", "24.19.0"),
                ("xen", "4.17.0"),
                ("linux", Environment.OSVersion.Version.ToString()),
                ("hostname", facts.Hostname),
                ("date", "2026-11-22"),
                ("db_schema", "5.780"),
                ("network_backend", "bridge"));

            Create("host", "host", new()
            {
                ["name_label"] = facts.Hostname,
                ["name_description"] = "Default install",
                ["API_version_major"] = (long)ApiSchema.ApiVersionMajor,
                ["API_version_minor"] = (long)ApiSchema.ApiVersionMinor,
                ["API_version_vendor"] = "XenSource",
                ["API_version_vendor_implementation"] = ValueMap.Empty,
                ["enabled"] = true,
                ["software_version"] = softwareVersion,
                ["other_config"] = Map(("agent_start_time", $"{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}."), ("iscsi_iqn", "")),
                ["capabilities"] = new object?[] { "xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64" },
                ["cpu_configuration"] = ValueMap.Empty,
                ["sched_policy"] = "credit",
                ["supported_bootloaders"] = new object?[] { "pygrub", "eliloader" },
                ["logging"] = ValueMap.Empty,
                ["suspend_image_sr"] = XType.NullRef,
                ["crash_dump_sr"] = XType.NullRef,
                ["cpu_info"] = Map(
                    ("cpu_count", facts.CpuCount.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                    ("socket_count", "1"),
                    ("vendor", facts.CpuVendor),
                    ("speed", facts.CpuSpeedMhz.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                    ("modelname", facts.CpuModelName),
                    ("family", facts.CpuFamily),
                    ("model", facts.CpuModel),
                    ("stepping", facts.CpuStepping),
                    ("flags", facts.CpuFlags),
                    ("features", ""),
                    ("features_pv", ""),
                    ("features_hvm", "")),
                ["hostname"] = facts.Hostname,
                ["address"] = facts.Address,
                ["metrics"] = Ref("host_metrics"),
                ["license_params"] = Map(("sku_type", "free"), ("restrict_pool_size", "false")),
                ["edition"] = "xcp-ng",
                ["editions"] = new object?[] { "xcp-ng" },
                ["bios_strings"] = Map(("bios-vendor", "Xen"), ("system-manufacturer", "Xen")),
                ["control_domain"] = Ref("dom0"),
                ["iscsi_iqn"] = "",
                ["display"] = "enabled",
                ["tls_verification_enabled"] = true,
            });

            for (var i = 0; i < facts.CpuCount; i++)
            {
                Create("host_cpu", $"host_cpu/{i}", new()
                {
                    ["host"] = Ref("host"),
                    ["number"] = (long)i,
                    ["vendor"] = facts.CpuVendor,
                    ["speed"] = facts.CpuSpeedMhz,
                    ["modelname"] = facts.CpuModelName,
                    ["family"] = long.TryParse(facts.CpuFamily, out var family) ? family : 0L,
                    ["model"] = long.TryParse(facts.CpuModel, out var model) ? model : 0L,
                    ["stepping"] = facts.CpuStepping,
                    ["flags"] = facts.CpuFlags,
                    ["features"] = "",
                    ["utilisation"] = 0.0,
                });
            }

            Create("pool", "pool", new()
            {
                ["name_label"] = "",
                ["name_description"] = "",
                ["master"] = Ref("host"),
                ["default_SR"] = XType.NullRef,
                ["suspend_image_SR"] = XType.NullRef,
                ["crash_dump_SR"] = XType.NullRef,
                ["other_config"] = Map(("memory-ratio-hvm", "0.25"), ("memory-ratio-pv", "0.25")),
                ["cpu_info"] = Map(("cpu_count", facts.CpuCount.ToString(System.Globalization.CultureInfo.InvariantCulture)), ("vendor", facts.CpuVendor)),
                ["restrictions"] = Map(("restrict_pool_size", "false")),
            });

            Create("VM_metrics", "dom0/metrics", new()
            {
                ["memory_actual"] = Math.Min(facts.MemoryTotal, 4L << 30),
                ["VCPUs_number"] = (long)facts.CpuCount,
                ["VCPUs_CPU"] = ValueMap.Empty,
                ["VCPUs_params"] = ValueMap.Empty,
                ["VCPUs_flags"] = ValueMap.Empty,
                ["state"] = new object?[] { },
                ["start_time"] = now,
                ["install_time"] = now,
                ["last_updated"] = now,
            });
            var dom0Memory = Math.Min(facts.MemoryTotal, 4L << 30);
            Create("VM", "dom0", VmValues($"Control domain on host: {facts.Hostname}", "The domain which manages physical devices and manages other domains",
                dom0Memory, facts.CpuCount, isTemplate: false).Merge(new()
            {
                ["power_state"] = "Running",
                ["is_control_domain"] = true,
                ["resident_on"] = Ref("host"),
                ["domid"] = 0L,
                ["metrics"] = Ref("dom0/metrics"),
                ["domain_type"] = "pv",
                ["other_config"] = Map(("storage_driver_domain", Ref("dom0")), ("is_system_domain", "true")),
                ["allowed_operations"] = new object?[] { "changing_dynamic_range", "metadata_export", "data_source_op" },
            }));

            Create("PIF_metrics", "pif/metrics", new()
            {
                ["carrier"] = true,
                ["vendor_id"] = "",
                ["vendor_name"] = "",
                ["device_id"] = "",
                ["device_name"] = "",
                ["speed"] = 1000L,
                ["duplex"] = true,
                ["pci_bus_path"] = "",
                ["last_updated"] = now,
            });
            Create("network", "network/management", new()
            {
                ["name_label"] = $"Pool-wide network associated with {facts.ManagementDevice}",
                ["name_description"] = "",
                ["MTU"] = 1500L,
                ["other_config"] = ValueMap.Empty,
                ["bridge"] = "xenbr0",
                ["managed"] = true,
            });
            Create("PIF", "pif/management", new()
            {
                ["device"] = facts.ManagementDevice,
                ["network"] = Ref("network/management"),
                ["host"] = Ref("host"),
                ["MAC"] = facts.Mac,
                ["MTU"] = 1500L,
                ["VLAN"] = -1L,
                ["metrics"] = Ref("pif/metrics"),
                ["physical"] = true,
                ["currently_attached"] = true,
                ["ip_configuration_mode"] = "DHCP",
                ["IP"] = facts.Address,
                ["netmask"] = "255.255.255.0",
                ["management"] = true,
                ["managed"] = true,
            });

            foreach (var (type, name, description, capabilities) in StorageDrivers)
            {
                Create("SM", "sm/" + type, new()
                {
                    ["name_label"] = name,
                    ["name_description"] = description,
                    ["type"] = type,
                    ["vendor"] = "xapi-dotnet",
                    ["copyright"] = "(C) the xapi-dotnet authors",
                    ["version"] = "1.0",
                    ["required_api_version"] = "1.0",
                    ["configuration"] = ValueMap.Empty,
                    ["capabilities"] = capabilities,
                    ["features"] = ValueMap.FromPairs(capabilities.Select(c => new KeyValuePair<object, object?>(c!, 1L))),
                    ["driver_filename"] = "",
                    ["supported_image_formats"] = new object?[] { "vhd", "raw" },
                });
            }

            foreach (var template in Templates)
            {
                Create("VM", "template/" + template.Name, VmValues(template.Name, template.Description, template.MemoryBytes, template.Vcpus, isTemplate: true).Merge(new()
                {
                    ["other_config"] = Map(
                        ("default_template", "true"),
                        ("linux_template", template.Linux ? "true" : "false"),
                        ("install-methods", template.InstallMethods),
                        ("disks", $"<provision><disk device=\"0\" size=\"{template.DiskBytes}\" sr=\"\" bootable=\"true\" type=\"system\"/></provision>"),
                        ("base_template_name", template.Name)),
                    ["recommendations"] = $"<restrictions><restriction field=\"memory-static-max\" max=\"{256L << 30}\"/><restriction field=\"vcpus-max\" max=\"64\"/><restriction property=\"number-of-vbds\" max=\"255\"/><restriction property=\"number-of-vifs\" max=\"7\"/></restrictions>",
                    ["reference_label"] = template.ReferenceLabel,
                }));
            }
        });
    }


    private static readonly (string Type, string Name, string Description, object?[] Capabilities)[] StorageDrivers =
    [
        ("ext", "Local EXT3 VHD", "SR plugin representing disks as VHD files stored on a local path",
            ["SR_PROBE", "SR_UPDATE", "SR_SUPPORTS_LOCAL_CACHING", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE", "VDI_MIRROR", "VDI_GENERATE_CONFIG", "VDI_RESET_ON_BOOT/2", "VDI_CONFIG_CBT", "ATOMIC_PAUSE", "VDI_ACTIVATE", "VDI_DEACTIVATE", "THIN_PROVISIONING"]),
        ("iso", "ISO", "Handles CD images stored as files in iso format",
            ["VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH", "SR_SCAN", "SR_ATTACH", "SR_DETACH"]),
        ("udev", "Local Devices", "SR plugin which represents removable devices as VDIs",
            ["SR_SCAN", "VDI_ATTACH", "VDI_DETACH", "VDI_INTRODUCE"]),
    ];

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

    private static Dictionary<string, object?> VmValues(string name, string description, long memory, long vcpus, bool isTemplate) => new()
    {
        ["name_label"] = name,
        ["name_description"] = description,
        ["user_version"] = 1L,
        ["is_a_template"] = isTemplate,
        ["is_default_template"] = isTemplate,
        ["power_state"] = "Halted",
        ["memory_static_max"] = memory,
        ["memory_dynamic_max"] = memory,
        ["memory_dynamic_min"] = memory,
        ["memory_static_min"] = Math.Min(memory, 512L << 20),
        ["memory_target"] = memory,
        ["VCPUs_max"] = vcpus,
        ["VCPUs_at_startup"] = vcpus,
        ["VCPUs_params"] = ValueMap.Empty,
        ["actions_after_shutdown"] = "destroy",
        ["actions_after_reboot"] = "restart",
        ["actions_after_crash"] = "restart",
        ["HVM_boot_policy"] = isTemplate ? "BIOS order" : "",
        ["HVM_boot_params"] = isTemplate ? ValueMap.FromPairs([new("order", "cdn")]) : ValueMap.Empty,
        ["platform"] = isTemplate
            ? ValueMap.FromPairs([new("viridian", "false"), new("acpi", "1"), new("apic", "true"), new("pae", "true"), new("nx", "true"), new("device-model", "qemu-upstream-compat")])
            : ValueMap.Empty,
        ["PV_bootloader"] = "",
        ["PV_kernel"] = "",
        ["PV_ramdisk"] = "",
        ["PV_args"] = "",
        ["PV_bootloader_args"] = "",
        ["PV_legacy_args"] = "",
        ["PCI_bus"] = "",
        ["other_config"] = ValueMap.Empty,
        ["affinity"] = XType.NullRef,
        ["resident_on"] = XType.NullRef,
        ["domid"] = -1L,
        ["domain_type"] = isTemplate ? "hvm" : "pv",
        ["recommendations"] = "",
        ["ha_always_run"] = false,
        ["ha_restart_priority"] = "",
        ["tags"] = ValueSet.Empty,
        ["xenstore_data"] = ValueMap.Empty,
        ["allowed_operations"] = isTemplate
            ? new object?[] { "clone", "copy", "export", "provision", "destroy", "changing_static_range", "changing_dynamic_range", "changing_VCPUs", "metadata_export" }
            : new object?[] { },
    };
}

internal static class DictionaryMerge
{
    /// <summary>Overlays <paramref name="overrides"/> on a base set of field values.</summary>
    public static Dictionary<string, object?> Merge(this Dictionary<string, object?> values, Dictionary<string, object?> overrides)
    {
        foreach (var (key, value) in overrides)
        {
            values[key] = value;
        }
        return values;
    }
}
