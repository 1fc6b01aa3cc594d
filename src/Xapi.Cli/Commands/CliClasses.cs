using System.Collections.Frozen;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>How a CLI field behaves for param commands and filters.</summary>
public enum CliFieldKind
{
    Plain,
    Set,
    Map,
}

/// <summary>
/// One field as real xe shows it: its CLI name, where the value comes from (a field of the
/// record, or a field of the object a reference field points at), its qualifier and which
/// messages change it.
/// </summary>
public sealed class CliField
{
    internal CliField(string name, FieldMeta field, FieldMeta? target, CliFieldKind kind, bool writable, bool deprecated)
    {
        Name = name;
        Field = field;
        Via = target is null ? null : field;
        Target = target;
        Kind = kind;
        Writable = writable;
        Qualifier = kind switch
        {
            CliFieldKind.Set => writable ? " (SRW)" : " (SRO)",
            CliFieldKind.Map => writable ? " (MRW)" : " (MRO)",
            _ => writable ? " ( RW)" : " ( RO)",
        };
        Key = name + Qualifier + (deprecated ? " [DEPRECATED]" : "");
    }

    public string Name { get; }

    /// <summary>The record's own field the value comes from (for a field shown through a reference, that reference).</summary>
    public FieldMeta Field { get; }

    /// <summary>Set when the value is a field of the referenced object (<c>vm-name-label</c> of a VBD): the reference field.</summary>
    public FieldMeta? Via { get; }

    /// <summary>The referenced object's field, with <see cref="Via"/>.</summary>
    public FieldMeta? Target { get; }

    public CliFieldKind Kind { get; }

    /// <summary>Changed by the API's setter (plain), <c>add_to_</c> (map) or <c>add_</c> (set).</summary>
    public bool Writable { get; }

    /// <summary><c> ( RO)</c>, <c> (MRW)</c>, …, with its leading space.</summary>
    public string Qualifier { get; }

    /// <summary>What a table prints before the colon.</summary>
    public string Key { get; }

    /// <summary>Real xe joins these sets with <c>, </c> rather than <c>; </c> (tags and a few others).</summary>
    public bool CommaSet { get; init; }

    /// <summary>Printed as <c>&lt;expensive field&gt;</c> in <c>-list</c> output.</summary>
    public bool Expensive { get; init; }

    /// <summary>Real xe prints this enum in lower case (VM power-state).</summary>
    public bool LowerCaseEnum { get; init; }

    /// <summary>Filters on this field ignore case (MAC addresses).</summary>
    public bool CaseInsensitive { get; init; }

    /// <summary>A null reference is printed as <c>OpaqueRef:NULL</c> instead of <c>&lt;not in database&gt;</c>.</summary>
    public bool NullAsRef { get; init; }

    /// <summary>The API message that sets the whole field, when it has one.</summary>
    public string? SetMessage => Via is null ? Message("set_" + Field.Name) : null;

    /// <summary>The message adding a map key (<c>add_to_x</c>) or a set member (<c>add_x</c>).</summary>
    public string? AddMessage => Via is null ? Message((Kind == CliFieldKind.Map ? "add_to_" : "add_") + Field.Name) : null;

    /// <summary>The message removing a map key (<c>remove_from_x</c>) or a set member (<c>remove_x</c>).</summary>
    public string? RemoveMessage => Via is null ? Message((Kind == CliFieldKind.Map ? "remove_from_" : "remove_") + Field.Name) : null;

    private string? Message(string name) =>
        Field.Owner.MessagesByName.TryGetValue(name, out var message) && !message.IsInternal ? message.WireName : null;

    /// <summary>The type of the value shown.</summary>
    public XType Type => (Target ?? Field).Type;

    public override string ToString() => Key;
}

/// <summary>A class as real xe's generated commands show it: <c>vm-list</c>, <c>vm-param-get</c>, ….</summary>
public sealed class CliClass
{
    private readonly FrozenDictionary<string, CliField> _byName;

    internal CliClass(string prefix, ClassMeta cls, IReadOnlyList<CliField> fields, IReadOnlyList<string> defaultColumns,
        IReadOnlyList<KeyValuePair<string, string>> defaultFilter)
    {
        Prefix = prefix;
        Class = cls;
        Fields = fields;
        _byName = fields.GroupBy(f => f.Name, StringComparer.Ordinal).ToFrozenDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        // Default columns show in record order; names the record lacks are dropped, as real xe does.
        DefaultColumns = defaultColumns.Count == 0 ? fields : fields.Where(f => defaultColumns.Contains(f.Name)).ToList();
        DefaultFilter = defaultFilter;
    }

    /// <summary>The command prefix: <c>vm</c>, <c>host-cpu</c>, <c>drtask</c>.</summary>
    public string Prefix { get; }

    public ClassMeta Class { get; }

    /// <summary>Every shown field, in record order.</summary>
    public IReadOnlyList<CliField> Fields { get; }

    /// <summary>The columns of <c>&lt;prefix&gt;-list</c> without <c>params=</c>.</summary>
    public IReadOnlyList<CliField> DefaultColumns { get; }

    /// <summary>Filters <c>-list</c> always applies (vm-list: is-a-template=false).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> DefaultFilter { get; }

    /// <summary>The plural in help texts: <c>vms</c>, <c>patches</c>.</summary>
    public string Plural => Prefix == "patch" ? "patches" : Prefix + "s";

    public CliField? Find(string name) => _byName.GetValueOrDefault(name);
}

/// <summary>
/// The classes real xe generates commands for, in its order, with the field names, qualifiers
/// and default columns of its records (records.ml, cli_operations.ml <c>gen_cmds</c>).
/// </summary>
public static class CliClasses
{
    // Field specs: "cli-name", "cli-name=field", "cli-name=ref.field"; after '!' comma-separated
    // options: RO, RW (plain, read-only or settable), SRO, SRW, MRO, MRW, comma (set joined by
    // ", "), exp (expensive), lower (lower-case enum), ci (case-insensitive), depr, null.
    // Names whose source the datamodel lacks are skipped.
    private static readonly string[] VmFields =
    [
        "uuid", "name-label", "name-description", "user-version", "is-a-template", "is-default-template", "is-a-snapshot",
        "snapshot-of", "snapshots!RO", "snapshot-time", "snapshot-info", "parent", "children!RO", "is-control-domain",
        "power-state!lower", "memory-actual=metrics.memory_actual", "memory-target!exp", "memory-overhead",
        "memory-static-max", "memory-dynamic-max", "memory-dynamic-min", "memory-static-min", "suspend-VDI-uuid=suspend_VDI",
        "suspend-SR-uuid=suspend_SR", "VCPUs-params", "VCPUs-max", "VCPUs-at-startup", "actions-after-shutdown",
        "actions-after-softreboot", "actions-after-reboot", "actions-after-crash", "console-uuids=consoles", "hvm=metrics.hvm",
        "platform", "numa-optimised=metrics.numa_optimised", "numa-nodes=metrics.numa_nodes",
        "numa-node-memory=metrics.numa_node_memory", "allowed-operations", "current-operations", "blocked-operations",
        "domain-type", "current-domain-type=metrics.current_domain_type", "HVM-boot-policy", "HVM-boot-params",
        "HVM-shadow-multiplier", "PV-kernel", "PV-ramdisk", "PV-args", "PV-legacy-args", "PV-bootloader", "PV-bootloader-args",
        "last-boot-CPU-flags", "resident-on", "affinity", "other-config", "dom-id=domid", "recommendations!RO", "xenstore-data",
        "ha-always-run!depr", "ha-restart-priority", "blobs!RO", "start-time=metrics.start_time",
        "install-time=metrics.install_time", "VCPUs-number=metrics.VCPUs_number", "VCPUs-utilisation=metrics.VCPUs_utilisation!exp",
        "os-version=guest_metrics.os_version", "netbios-name=guest_metrics.netbios_name",
        "PV-drivers-version=guest_metrics.PV_drivers_version", "PV-drivers-up-to-date=guest_metrics.PV_drivers_up_to_date!depr",
        "memory=guest_metrics.memory", "disks=guest_metrics.disks", "VBDs", "networks=guest_metrics.networks",
        "services=guest_metrics.services", "PV-drivers-detected=guest_metrics.PV_drivers_detected", "other=guest_metrics.other",
        "live=guest_metrics.live", "guest-metrics-last-updated=guest_metrics.last_updated",
        "can-use-hotplug-vbd=guest_metrics.can_use_hotplug_vbd", "can-use-hotplug-vif=guest_metrics.can_use_hotplug_vif",
        "tags!comma", "appliance", "groups!RW", "snapshot-schedule", "is-vmss-snapshot", "start-delay", "shutdown-delay", "order",
        "version", "generation-id", "hardware-platform-version", "has-vendor-device", "requires-reboot", "reference-label",
        "bios-strings!MRO", "pending-guidances!RO", "vtpms=VTPMs!RO", "pending-guidances-recommended!RO", "pending-guidances-full!RO",
    ];

    private static readonly Dictionary<string, string[]> Specs = new(StringComparer.Ordinal)
    {
        ["vm"] = VmFields,
        ["host"] =
        [
            "uuid", "name-label", "name-description", "allowed-operations", "current-operations", "enabled", "display",
            "API-version-major", "API-version-minor", "API-version-vendor", "API-version-vendor-implementation", "logging",
            "suspend-image-sr-uuid=suspend_image_sr", "crash-dump-sr-uuid=crash_dump_sr", "software-version", "capabilities",
            "other-config", "cpu_info", "chipset-info", "hostname!RO", "address!RO", "https-only", "supported-bootloaders", "blobs!RO",
            "memory-overhead", "memory-total=metrics.memory_total", "memory-free=metrics.memory_free", "host-metrics-live=metrics.live",
            "patches!depr", "updates", "ha-statefiles!RO", "ha-network-peers!RO", "external-auth-type", "external-auth-service-name",
            "external-auth-configuration", "edition", "license-server!MRO", "power-on-mode!RO", "power-on-config", "local-cache-sr",
            "tags!comma", "ssl-legacy", "guest_VCPUs_params", "virtual-hardware-platform-versions", "control-domain-uuid=control_domain",
            "resident-vms=resident_VMs", "updates-requiring-reboot", "features", "iscsi_iqn", "multipathing", "numa-affinity-policy",
            "pending-guidances!RO", "tls-verification-enabled", "last-software-update", "latest-synced-updates-applied",
            "pending-guidances-recommended!RO", "pending-guidances-full!RO", "last-update-hash", "ssh-enabled", "ssh-enabled-timeout",
            "ssh-expiry", "console-idle-timeout", "ssh-auto-mode", "max-cstate", "secure-boot", "ntp-mode", "ntp-custom-servers!comma",
            "timezone",
        ],
        ["sr"] =
        [
            "uuid", "name-label", "name-description", "allowed-operations", "current-operations", "VDIs", "PBDs",
            "virtual-allocation", "physical-utilisation", "physical-size", "type", "content-type", "shared", "introduced-by",
            "is-tools-sr", "other-config", "sm-config", "blobs!RO", "local-cache-enabled", "tags!comma", "clustered",
        ],
        ["vdi"] =
        [
            "uuid", "name-label", "name-description", "is-a-snapshot", "snapshot-of", "snapshots!RO", "snapshot-time",
            "allowed-operations", "current-operations", "sr-uuid=SR", "sr-name-label=SR.name_label", "vbd-uuids=VBDs",
            "crashdump-uuids=crash_dumps", "virtual-size", "physical-utilisation", "location", "type", "sharable", "read-only",
            "storage-lock", "managed", "parent!depr", "missing", "is-tools-iso", "other-config", "xenstore-data!MRO", "sm-config",
            "on-boot", "allow-caching", "metadata-latest", "metadata-of-pool", "tags!comma", "cbt-enabled",
        ],
        ["vbd"] =
        [
            "uuid", "vm-uuid=VM", "vm-name-label=VM.name_label", "vdi-uuid=VDI", "vdi-name-label=VDI.name_label",
            "allowed-operations", "current-operations", "empty", "device", "userdevice", "bootable", "mode", "type", "unpluggable",
            "currently-attached", "storage-lock", "status-code", "status-detail", "qos_algorithm_type", "qos_algorithm_params",
            "qos_supported_algorithms", "other-config",
        ],
        ["vif"] =
        [
            "uuid", "vm-uuid=VM", "vm-name-label=VM.name_label", "allowed-operations", "current-operations", "device", "MAC!ci",
            "MAC-autogenerated", "MTU", "currently-attached", "qos_algorithm_type", "qos_algorithm_params",
            "qos_supported_algorithms", "other-config", "network-uuid=network", "network-name-label=network.name_label",
            "locking-mode", "ipv4-allowed", "ipv6-allowed", "ipv4-configuration-mode", "ipv4-addresses!RO", "ipv4-gateway",
            "ipv6-configuration-mode", "ipv6-addresses!RO", "ipv6-gateway",
        ],
        ["pbd"] =
        [
            "uuid", "host=host!depr", "host-uuid=host", "host-name-label=host.name_label", "sr-uuid=SR", "sr-name-label=SR.name_label",
            "device-config", "currently-attached", "other-config",
        ],
        ["pool"] =
        [
            "uuid", "name-label", "name-description", "master", "default-SR", "crash-dump-SR", "suspend-image-SR", "other-config",
            "allowed-operations", "current-operations", "ha-enabled", "ha-configuration!RO", "ha-statefiles!RO",
            "ha-host-failures-to-tolerate", "ha-plan-exists-for", "ha-allow-overcommit", "ha-overcommitted",
            "ha-reboot-vm-on-internal-shutdown", "blobs!RO", "wlb-url", "wlb-username", "wlb-enabled", "wlb-verify-cert",
            "igmp-snooping-enabled", "gui-config", "health-check-config", "restrictions!RO", "tags!comma", "license-state!RO",
            "ha-cluster-stack", "guest-agent-config", "cpu_info", "policy-no-vendor-device", "live-patching-disabled",
            "tls-verification-enabled", "client-certificate-auth-enabled", "client-certificate-auth-name", "repositories!SRW",
            "repository-proxy-url", "repository-proxy-username", "https-only", "migration-compression", "coordinator-bias",
            "telemetry-frequency", "telemetry-next-collection", "last-update-sync", "update-sync-frequency", "update-sync-day",
            "update-sync-enabled!RO", "auto-update-vm-secureboot-certificates", "recommendations!MRO", "license-server!MRW",
            "ssh-enabled", "ssh-enabled-timeout", "ssh-expiry", "console-idle-timeout", "ssh-auto-mode", "limit-console-sessions",
            "vm-console-idle-timeout",
        ],
        ["network"] =
        [
            "uuid", "name-label", "name-description", "VIF-uuids=VIFs", "PIF-uuids=PIFs", "MTU", "bridge", "managed", "other-config",
            "blobs!RO", "tags!comma", "default-locking-mode", "purpose!comma",
        ],
        ["task"] =
        [
            "uuid", "name-label!RO", "name-description!RO", "subtask_of", "subtasks!RO", "resident-on", "status!RO", "progress!RO",
            "type", "result!RO", "created", "finished", "error_info!RO", "allowed_operations!RO", "current_operations!RO", "other-config",
        ],
        ["message"] = ["uuid", "name", "priority", "class=cls", "obj-uuid=obj_uuid", "timestamp", "body"],
        ["console"] = ["uuid", "vm-uuid=VM", "vm-name-label=VM.name_label", "protocol", "location", "other-config"],
        ["pif"] =
        [
            "uuid", "device", "MAC!ci", "physical", "managed", "currently-attached", "MTU", "VLAN", "bond-master-of", "bond-slave-of",
            "tunnel-access-PIF-of", "tunnel-transport-PIF-of", "management", "network-uuid=network", "network-name-label=network.name_label",
            "host-uuid=host", "host-name-label=host.name_label", "IP-configuration-mode=ip_configuration_mode", "IP", "netmask",
            "gateway", "IPv6-configuration-mode=ipv6_configuration_mode", "IPv6=IPv6", "IPv6-gateway=ipv6_gateway",
            "primary-address-type", "DNS", "properties", "capabilities", "io_read_kbs", "io_write_kbs", "carrier", "vendor-id",
            "vendor-name", "device-id", "device-name", "speed", "duplex", "disallow-unplug", "pci-bus-path", "other-config",
            "igmp-snooping-status",
        ],
    };

    // Real xe's gen_cmds: prefix, class, default filter, default columns.
    private static readonly (string Prefix, string Class, string? Spec, string[] Filter, string[] Columns)[] Table =
    [
        ("pool", "pool", "pool", [], ["uuid", "name-label", "name-description", "master", "default-SR"]),
        ("pif", "PIF", "pif", [], ["uuid", "device", "VLAN", "MAC", "network-uuid", "currently-attached", "host-uuid"]),
        ("bond", "Bond", null, [], ["uuid", "master", "slaves"]),
        ("vlan", "VLAN", null, [], ["uuid", "tagged-PIF", "untagged-PIF", "tag"]),
        ("tunnel", "tunnel", null, [], ["uuid", "transport-PIF", "access-PIF", "status"]),
        ("vif", "VIF", "vif", [], ["uuid", "device", "vm-uuid", "network-uuid"]),
        ("network", "network", "network", [], ["uuid", "name-label", "name-description", "bridge"]),
        ("console", "console", "console", [], ["uuid", "vm-uuid", "vm-name-label", "protocol", "location"]),
        ("vm", "VM", "vm", ["is-a-template=false"], ["name-label", "uuid", "power-state"]),
        ("template", "VM", "vm", ["is-a-template=true", "is-a-snapshot=false"], ["name-label", "name-description", "uuid"]),
        // Real xe names two default columns with underscores, which match no field.
        ("snapshot", "VM", "vm", ["is-a-snapshot=true"], ["name-label", "name-description", "uuid", "snapshot_of", "snapshot_time", "is-vmss-snapshot"]),
        ("host", "host", "host", [], ["uuid", "name-label", "name-description"]),
        ("host-cpu", "host_cpu", null, [], ["uuid", "number", "vendor", "speed", "utilisation"]),
        ("host-crashdump", "host_crashdump", null, [], ["uuid", "host", "timestamp", "size"]),
        ("patch", "pool_patch", null, [], ["uuid", "name-label", "name-description", "size", "hosts", "after-apply-guidance"]),
        ("update", "pool_update", null, [], ["uuid", "name-label", "name-description", "version", "installation-size", "hosts", "after-apply-guidance"]),
        ("vdi", "VDI", "vdi", [], ["uuid", "name-label", "name-description", "virtual-size", "read-only", "sharable", "sr-uuid"]),
        ("vbd", "VBD", "vbd", [], ["uuid", "vm-uuid", "vm-name-label", "vdi-uuid", "device", "empty"]),
        ("sr", "SR", "sr", [], ["uuid", "name-label", "name-description", "host", "type", "content-type"]),
        ("sm", "SM", null, [], ["uuid", "type", "name-label", "name-description", "vendor", "copyright", "configuration"]),
        ("pbd", "PBD", "pbd", [], ["uuid", "host-uuid", "sr-uuid", "device-config", "currently-attached"]),
        ("task", "task", "task", [], ["uuid", "name-label", "name-description", "status", "progress"]),
        ("subject", "subject", null, [], ["uuid", "subject-identifier", "other-config", "roles"]),
        ("role", "role", null, [], ["uuid", "name", "description", "subroles"]),
        ("vmss", "VMSS", null, [], ["uuid", "name-label", "name-description", "enabled", "type", "retained-snapshots", "frequency", "schedule", "last-run-time", "VMs"]),
        ("message", "message", "message", [], []),
        ("secret", "secret", null, [], []),
        ("appliance", "VM_appliance", null, [], []),
        ("vm-group", "VM_group", null, [], ["uuid", "name-label", "name-description", "placement", "vm-uuids"]),
        ("pgpu", "PGPU", null, [], ["uuid", "pci-uuid", "vendor-name", "device-name", "gpu-group-uuid"]),
        ("gpu-group", "GPU_group", null, [], ["uuid", "name-label", "name-description"]),
        ("vgpu", "VGPU", null, [], ["uuid", "vm-uuid", "device", "gpu-group-uuid"]),
        ("vgpu-type", "VGPU_type", null, [], ["uuid", "vendor-name", "model-name", "max-resolution", "max-heads"]),
        ("drtask", "DR_task", null, [], []),
        ("pvs-site", "PVS_site", null, [], ["uuid", "name-label", "name-description", "pvs-uuid", "pvs-server-uuids"]),
        ("pvs-server", "PVS_server", null, [], ["uuid", "addresses", "pvs-site-uuid"]),
        ("pvs-proxy", "PVS_proxy", null, [], ["uuid", "vif-uuid", "pvs-site-uuid", "currently-attached", "cache-sr-uuid"]),
        ("pvs-cache-storage", "PVS_cache_storage", null, [], ["uuid", "host-uuid", "sr-uuid", "pvs-site-uuid", "size"]),
        ("feature", "Feature", null, [], ["uuid", "name-label", "name-description", "enabled", "experimental", "version", "host-uuid"]),
        ("sdn-controller", "SDN_controller", null, [], ["uuid", "protocol", "address", "port"]),
        ("pusb", "PUSB", null, [], ["uuid", "path", "product-id", "product-desc", "vendor-id", "vendor-desc", "serial", "version", "description", "speed"]),
        ("usb-group", "USB_group", null, [], ["uuid", "name-label", "name-description"]),
        ("vusb", "VUSB", null, [], ["uuid", "vm-uuid", "usb-group-uuid"]),
        ("network-sriov", "network_sriov", null, [], ["uuid", "physical-pif", "logical-pif", "requires-reboot", "configuration-mode"]),
        ("cluster", "Cluster", null, [], ["uuid", "cluster-hosts", "cluster-token", "cluster-stack", "allowed-operations", "current-operations", "pool-auto-join", "cluster-config", "other-config"]),
        ("cluster-host", "Cluster_host", null, [], ["uuid", "cluster", "pif", "host", "enabled", "allowed-operations", "current-operations", "other-config"]),
        ("certificate", "Certificate", null, [], ["uuid", "type", "name", "host", "not-before", "not-after", "fingerprint", "purpose"]),
        ("repository", "Repository", null, [], ["uuid", "name-label", "name-description", "binary-url", "source-url", "update", "hash", "up-to-date", "gpgkey-path", "origin"]),
        ("hostdriver-variant", "Driver_variant", null, [], ["uuid", "driver-name", "name", "version", "priority", "host-uuid", "driver-uuid", "active", "selected", "status", "hw-present"]),
        ("hostdriver", "Host_driver", null, [], ["uuid", "name", "host-uuid", "active-variant", "selected-variant", "variants", "variants-uuid"]),
        ("vtpm", "VTPM", null, [], ["uuid", "vm-uuid", "profile"]),
        ("observer", "Observer", null, [], ["uuid", "name-label", "name-description", "host-uuids", "endpoints", "enabled"]),
        ("pci", "PCI", null, [], ["uuid", "vendor-name", "device-name", "pci-id"]),
        ("caller", "Caller", null, [], ["uuid", "name-label", "name-description", "user-agent", "client-ip", "last-access", "groups", "rate-limit"]),
        ("rate-limit", "Rate_limit", null, [], ["uuid", "name-label", "callers", "burst-size", "fill-rate"]),
    ];

    private static readonly Lazy<IReadOnlyList<CliClass>> AllClasses = new(Build);

    /// <summary>Every generated class, in real xe's order.</summary>
    public static IReadOnlyList<CliClass> All => AllClasses.Value;

    /// <summary>The class by command prefix (<c>vm</c>, <c>host-cpu</c>).</summary>
    public static CliClass? ByPrefix(string prefix) => All.FirstOrDefault(c => c.Prefix == prefix);

    /// <summary>The first CLI class showing an API class (VM: <c>vm</c>).</summary>
    public static CliClass? For(ClassMeta cls) => All.FirstOrDefault(c => c.Class == cls);

    /// <summary>A class shown field by field from the datamodel, for classes real xe has no commands for.</summary>
    public static CliClass Generic(ClassMeta cls) => new(cls.Name.ToLowerInvariant(), cls, GenericFields(cls), [], []);

    private static List<CliClass> Build()
    {
        var classes = new List<CliClass>();
        foreach (var (prefix, className, spec, filter, columns) in Table)
        {
            if (!ApiSchema.ClassesByName.TryGetValue(className, out var cls))
            {
                continue;
            }
            var fields = spec is null ? GenericFields(cls) : spec is var s && Specs.TryGetValue(s, out var entries) ? Parse(cls, entries) : GenericFields(cls);
            var defaultFilter = filter.Select(f => f.Split('=', 2)).Select(p => new KeyValuePair<string, string>(p[0], p[1])).ToList();
            classes.Add(new CliClass(prefix, cls, fields, columns, defaultFilter));
        }
        return classes;
    }

    private static List<CliField> GenericFields(ClassMeta cls) =>
        cls.Fields.Where(f => f.Lifecycle != Lifecycle.Removed)
            .Select(f => Make(f.Name.Replace('_', '-'), f, null, null, f.Lifecycle == Lifecycle.Deprecated, []))
            .ToList();

    private static List<CliField> Parse(ClassMeta cls, string[] entries)
    {
        var fields = new List<CliField>();
        foreach (var entry in entries)
        {
            var bang = entry.IndexOf('!', StringComparison.Ordinal);
            var options = bang < 0 ? [] : entry[(bang + 1)..].Split(',');
            var head = bang < 0 ? entry : entry[..bang];
            var equals = head.IndexOf('=', StringComparison.Ordinal);
            var name = equals < 0 ? head : head[..equals];
            var source = equals < 0 ? name.Replace('-', '_') : head[(equals + 1)..];
            var dot = source.IndexOf('.', StringComparison.Ordinal);
            var field = FindField(cls, dot < 0 ? source : source[..dot]);
            if (field is null)
            {
                continue;
            }
            FieldMeta? target = null;
            if (dot >= 0)
            {
                if (field.Type.Kind != XTypeKind.Ref || !ApiSchema.ClassesByName.TryGetValue(field.Type.Name!, out var targetClass)
                    || FindField(targetClass, source[(dot + 1)..]) is not { } found)
                {
                    continue;
                }
                target = found;
            }
            fields.Add(Make(name, field, target, options.FirstOrDefault(o => o is "RO" or "RW" or "SRO" or "SRW" or "MRO" or "MRW"),
                options.Contains("depr") || field.Lifecycle == Lifecycle.Deprecated, options));
        }
        return fields;
    }

    private static FieldMeta? FindField(ClassMeta cls, string name) =>
        cls.FieldsByName.TryGetValue(name, out var exact) ? exact
            : cls.Fields.FirstOrDefault(f => f.Name.Equals(name, StringComparison.OrdinalIgnoreCase) && f.Lifecycle != Lifecycle.Removed);

    private static CliField Make(string name, FieldMeta field, FieldMeta? target, string? forced, bool deprecated, string[] options)
    {
        var shown = (target ?? field).Type;
        var kind = forced switch
        {
            "RO" or "RW" => CliFieldKind.Plain,
            "SRO" or "SRW" => CliFieldKind.Set,
            "MRO" or "MRW" => CliFieldKind.Map,
            _ => shown.Kind switch { XTypeKind.Set => CliFieldKind.Set, XTypeKind.Map => CliFieldKind.Map, _ => CliFieldKind.Plain },
        };
        bool writable;
        if (forced is not null)
        {
            writable = forced.EndsWith('W');
        }
        else if (target is not null)
        {
            writable = false;
        }
        else
        {
            var messages = field.Owner.MessagesByName;
            bool Has(string m) => messages.TryGetValue(m, out var meta) && !meta.IsInternal;
            writable = kind switch
            {
                CliFieldKind.Set => Has("add_" + field.Name),
                CliFieldKind.Map => Has("add_to_" + field.Name),
                _ => Has("set_" + field.Name),
            };
        }
        return new CliField(name, field, target, kind, writable, deprecated)
        {
            CommaSet = options.Contains("comma"),
            Expensive = options.Contains("exp"),
            LowerCaseEnum = options.Contains("lower"),
            CaseInsensitive = options.Contains("ci"),
            NullAsRef = options.Contains("null"),
        };
    }
}
