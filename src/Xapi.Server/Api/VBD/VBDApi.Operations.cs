using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;

namespace Xapi.Server.Api;

/// <summary>Virtual block devices: the checks of their operations (xapi_vbd_helpers.ml).</summary>
public sealed partial class VBDApi : IVBDApi<CallContext>
{
    /// <summary>The check <c>attach</c> gets, VDI sharing included (a VM start asks it of every disk).</summary>
    public ValueTask AssertAttachable(CallContext context, VBDRef self)
    {
        if (VbdAllowedOperations.Check(context.Snapshot.Get(self), VbdOperations.Attach) is { } refused)
        {
            throw refused;
        }
        return ValueTask.CompletedTask;
    }
}
