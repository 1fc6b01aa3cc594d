using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>
/// What <c>VM.create</c> and <c>VM.destroy</c> say of power states and default templates beyond
/// the VM operation table (<see cref="Operations.VmAllowedOperations"/>), which decides whether
/// destroy may run at all.
/// </summary>
internal static class VmDestroyRule
{
    // other_config key that marks a template shipped with the host.
    public const string DefaultTemplateKey = "default_template";

    /// <summary>A power state as real hosts name it in VM_BAD_POWER_STATE: lower case.</summary>
    public static string Lower(VmPowerState state) => state.ToWire().ToLowerInvariant();
}
