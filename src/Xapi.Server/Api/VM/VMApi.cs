using System.Globalization;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;

namespace Xapi.Server.Api;

/// <summary>
/// Virtual machines. <c>VM.create</c> and <c>VM.destroy</c> keep the records a VM owns
/// (metrics, devices) in step with it, as real hosts do, before any VM runs.
/// </summary>
public sealed partial class VMApi(AllowedOperationsRules rules, VmRuntime runtime, Xapi.Storage.Service.StorageManager storage, VDIApi disks, TimeProvider time,
    OperationGuard operations, MessageApi messages, Pool.LiveMigration migration)
    : IVMApi<CallContext>
{
    private readonly VmAlerts _alerts = new(messages);

    // Real hosts offer 16 network devices to every guest (xapi_vm_helpers.ml); templates only recommend fewer.
    internal const int VifDeviceCount = 16;

    public ValueTask<IReadOnlyList<string>> GetAllowedVBDDevices(CallContext context, VMRef vm)
    {
        var snapshot = context.Snapshot;
        var free = VbdDevices.Free(snapshot, snapshot.Get(vm), VbdType.Disk) ?? [];
        return ValueTask.FromResult<IReadOnlyList<string>>(free.Select(d => d.Disk.ToString(CultureInfo.InvariantCulture)).ToList());
    }

    public ValueTask<IReadOnlyList<string>> GetAllowedVIFDevices(CallContext context, VMRef vm)
    {
        var snapshot = context.Snapshot;
        // Compared as strings, as real hosts do: a VIF with device "01" leaves "1" offered.
        var used = snapshot.Get(vm).VIFs.Where(v => snapshot.Exists(v)).Select(v => snapshot.Get(v).Device).ToHashSet(StringComparer.Ordinal);
        return ValueTask.FromResult<IReadOnlyList<string>>(Enumerable.Range(0, VifDeviceCount)
            .Select(n => n.ToString(CultureInfo.InvariantCulture)).Where(d => !used.Contains(d)).ToList());
    }
}
