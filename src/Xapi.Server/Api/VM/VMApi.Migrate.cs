using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Server.Pool;

namespace Xapi.Server.Api;

/// <summary>
/// VM.pool_migrate (xapi_vm_migrate.ml, message_forwarding.ml): a running VM whose disks are on
/// storage both hosts reach moves live to another member. The master checks the destination as
/// for a start there (memory, SRs, networks); the call runs on the VM's host, which streams the
/// guest over (<see cref="LiveMigration"/>).
/// </summary>
public sealed partial class VMApi
{
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.PoolMigrate)]
    public async ValueTask PoolMigrate(CallContext context, VMRef vm, HostRef host, ValueMap options)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.Get(vm);
        var source = runtime.ThisHost;
        if (host == source)
        {
            // Already there: a real host migrates to itself; the guest would end where it is.
            return;
        }
        await AssertCanBootHereAsync(context, vm, host);
        var destination = snapshot.Get(host);
        var uuid = Guid.Parse(record.Uuid);
        await using (var hold = await runtime.HoldAsync(uuid, context.Cancellation))
        {
            try
            {
                await migration.SendAsync(vm, uuid, destination, context.ReportProgress,
                    () => context.Write(tx => tx.Update(vm, v => v.ResidentOn = host)), hold.Token);
            }
            catch (MigrationFailedException e)
            {
                await runtime.SyncAsync(vm, uuid, VmPowerState.Halted, CancellationToken.None);
                throw XenApiErrors.VmMigrateFailed(vm.Value, source.Value, host.Value, e.Message);
            }
        }
        var from = snapshot.Get(source);
        await _alerts.RaiseAsync(context, vm, VmAlerts.Migrated,
            $"migrated from host '{from.NameLabel}' (uuid: {from.Uuid}) to host '{destination.NameLabel}' (uuid: {destination.Uuid})");
    }
}
