using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>
/// Whether <c>VM.destroy</c> may run, in the real server's check order (xapi_vm_lifecycle.ml):
/// power state, then template, then dom0. The power states belong in the VM operation table
/// when it exists; <see cref="PowerStateError"/> is the one place that states them for destroy.
/// </summary>
internal static class VmDestroyRule
{
    // other_config key that marks a template shipped with the host.
    public const string DefaultTemplateKey = "default_template";

    private static readonly VmPowerState[] AllowedPowerStates = [VmPowerState.Halted, VmPowerState.Suspended];

    /// <summary>VM_BAD_POWER_STATE [vm; "halted, suspended"; actual], lower-cased as real hosts send it.</summary>
    public static XenApiException? PowerStateError(VMRecord vm) =>
        AllowedPowerStates.Contains(vm.PowerState)
            ? null
            : XenApiErrors.VmBadPowerState(vm.Ref.Value, string.Join(", ", AllowedPowerStates.Select(Lower)), Lower(vm.PowerState));

    public static string Lower(VmPowerState state) => state.ToWire().ToLowerInvariant();

    public static XenApiException? Refusal(IRowReader db, VMRecord vm)
    {
        if (PowerStateError(vm) is { } powerState)
        {
            return powerState;
        }
        if (vm.IsATemplate && !vm.IsASnapshot && IsDefaultTemplate(vm))
        {
            // Real hosts add the operation to the declared [vm].
            return new XenApiException(ErrorCodes.VmIsTemplate, vm.Ref.Value, VmOperations.Destroy.ToWire());
        }
        if (vm.IsControlDomain && db.TryGet(vm.ResidentOn, out var host) && host.ControlDomain == vm.Ref)
        {
            return XenApiErrors.OperationNotAllowed("This operation is not allowed on dom0");
        }
        return null;
    }

    private static bool IsDefaultTemplate(VMRecord vm) =>
        vm.IsDefaultTemplate
        || (vm.OtherConfig.TryGetValue(DefaultTemplateKey, out var value) && value is string text
            && (text == "1" || text.Equals("true", StringComparison.OrdinalIgnoreCase)));
}
