using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>What VBD and VIF operations on a running VM share: one seam call on the held VM, then the fold.</summary>
internal static class DeviceOperations
{
    /// <summary>Runs one seam operation on the held VM and folds the backend's state afterwards, whatever happened.</summary>
    internal static ValueTask OnBackendAsync(
        VmRuntime runtime, CallContext context, VMRef vm, Guid uuid, VmRuntime.Hold hold, Func<CancellationToken, ValueTask> operation) =>
        runtime.RunHeldAsync(context, vm, uuid, hold, operation);

    /// <summary>The VM may have stopped while this call waited for it.</summary>
    internal static void AssertRunning(VMRecord vm)
    {
        if (vm.PowerState != VmPowerState.Running)
        {
            throw XenApiErrors.VmBadPowerState(vm.Ref.Value, VmAllowedOperations.Spelled(VmPowerState.Running), VmAllowedOperations.Spelled(vm.PowerState));
        }
    }
}
