using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// The alerts real hosts raise as VMs change state (api_messages.ml, message_forwarding.ml), which
/// Xen Orchestra and XenCenter show in their activity lists: one per completed power operation,
/// with the real name, priority and body. Raising one never fails the operation.
/// </summary>
internal sealed class VmAlerts(MessageApi messages)
{
    public static readonly (string Name, long Priority) Started = ("VM_STARTED", 5);
    public static readonly (string Name, long Priority) Shutdown = ("VM_SHUTDOWN", 5);
    // The alert shares its name with the error a reboot interrupting an operation raises.
    public static readonly (string Name, long Priority) Rebooted = (ErrorCodes.VmRebooted, 5);
    public static readonly (string Name, long Priority) Suspended = ("VM_SUSPENDED", 5);
    public static readonly (string Name, long Priority) Resumed = ("VM_RESUMED", 5);
    public static readonly (string Name, long Priority) Paused = ("VM_PAUSED", 5);
    public static readonly (string Name, long Priority) Unpaused = ("VM_UNPAUSED", 5);
    public static readonly (string Name, long Priority) Migrated = ("VM_MIGRATED", 5);
    public static readonly (string Name, long Priority) Snapshotted = ("VM_SNAPSHOTTED", 5);
    public static readonly (string Name, long Priority) Checkpointed = ("VM_CHECKPOINTED", 5);
    public static readonly (string Name, long Priority) SnapshotReverted = ("VM_SNAPSHOT_REVERTED", 5);

    /// <summary>Raises <paramref name="alert"/> for <paramref name="vm"/>: "VM 'name' (uuid: …) <paramref name="what"/>".</summary>
    public async ValueTask RaiseAsync(CallContext context, VMRef vm, (string Name, long Priority) alert, string what)
    {
        if (!context.Snapshot.TryGet(vm, out var record))
        {
            return;
        }
        try
        {
            await messages.Create(context, alert.Name, alert.Priority, Cls.VM, record.Uuid, $"VM '{record.NameLabel}' (uuid: {record.Uuid}) {what}");
        }
        catch (XenApiException)
        {
            // As on real hosts: the VM changed state whether or not the alert could be stored.
        }
    }

    /// <summary>"… on host: name (uuid: …)", as start and resume say where the VM runs.</summary>
    public static string OnHost(CallContext context, HostRef host) =>
        context.Snapshot.TryGet(host, out var record) ? $"on host: {record.NameLabel} (uuid: {record.Uuid})" : "";
}
