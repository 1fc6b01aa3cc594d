using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Storage.Service;

namespace Xapi.Server.Api;

/// <summary>Virtual machines: the checks of their operations (xapi_vm.ml, xapi_vm_lifecycle.ml).</summary>
public sealed partial class VMApi : IVMApi<CallContext>
{
    /// <summary>Runs the full check an operation gets before it runs, strict as messages are; registers nothing.</summary>
    public ValueTask AssertOperationValid(CallContext context, VMRef self, VmOperations op)
    {
        if (VmAllowedOperations.Check(context.Snapshot.Get(self), op) is { } refused)
        {
            throw refused;
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>As real hosts: the VM's VBDs, their VDIs and the VM's VIFs first, then the VM itself.</summary>
    public ValueTask UpdateAllowedOperations(CallContext context, VMRef self)
    {
        context.Write(tx => RefreshAllowedOperations(tx, self));
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Recomputes the stored <c>allowed_operations</c> of a VM and of its devices and disks, as
    /// real hosts do after a VM's power state or devices change (VM.update_allowed_operations).
    /// </summary>
    public static void RefreshAllowedOperations(Transaction tx, VMRef self)
    {
        var vm = tx.Get(self);
        foreach (var vbd in vm.VBDs)
        {
            VbdAllowedOperations.Refresh(tx, vbd);
            if (tx.TryGet(vbd, out var drive) && !drive.Empty && tx.TryGet(drive.VDI, out var vdi))
            {
                var inProgress = vdi.CurrentOperations.Values.Select(o => (string)o!).ToList();
                var allowed = StorageAllowedOperations.ForVdi(tx, vdi.Ref, tx.GetRowValues(VDIRef.Class, vdi.Ref.Value), inProgress);
                tx.Update(vdi.Ref, v => v.AllowedOperations = allowed.Select(o => VdiOperationsWire.Parse((string)o!)).ToArray());
            }
        }
        foreach (var vif in vm.VIFs)
        {
            VifAllowedOperations.Refresh(tx, vif);
        }
        VmAllowedOperations.Refresh(tx, self);
    }
}
