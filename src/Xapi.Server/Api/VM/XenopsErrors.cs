using System.Globalization;
using Xapi.Model;
using Xapi.Xenops;
using Xapi.Xenops.Orchestration;

namespace Xapi.Server.Api;

/// <summary>What a backend failure looks like to a client (xapi_xenops.ml's error translation), in one place.</summary>
internal static class XenopsErrors
{
    public static XenApiException ToXenApi(XenopsException error, VMRef vm) => error switch
    {
        NotEnoughMemoryException memory => XenApiErrors.HostNotEnoughFreeMemory(
            memory.NeededBytes.ToString(CultureInfo.InvariantCulture), memory.AvailableBytes.ToString(CultureInfo.InvariantCulture)),
        ShutdownNotAcknowledgedException => XenApiErrors.VmFailedShutdownAcknowledgment(vm.Value),
        ShutdownTimeoutException timeout => XenApiErrors.VmShutdownTimeout(vm.Value, OcamlFloat.Format(timeout.Timeout.TotalSeconds)),
        _ => XenApiErrors.InternalError(error.Message),
    };

    /// <summary>An operation cancelled through its task (task.cancel, or a hard shutdown taking over).</summary>
    public static XenApiException Cancelled(Dispatch.CallContext context) => XenApiErrors.TaskCancelled(context.Task?.Value ?? context.OperationRef);
}
