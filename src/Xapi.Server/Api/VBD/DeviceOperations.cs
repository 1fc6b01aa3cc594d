using Xapi.Model;
using Xapi.Server.Operations;

namespace Xapi.Server.Api;

/// <summary>What VBD and VIF operations on a running VM check once they hold it (the seam call itself goes through VmRuntime.RunHeldAsync).</summary>
internal static class DeviceOperations
{
    /// <summary>The VM may have stopped while this call waited for it.</summary>
    internal static void AssertRunning(VMRecord vm)
    {
        if (vm.PowerState != VmPowerState.Running)
        {
            throw XenApiErrors.VmBadPowerState(vm.Ref.Value, VmAllowedOperations.Spelled(VmPowerState.Running), VmAllowedOperations.Spelled(vm.PowerState));
        }
    }
}
