using Xapi.Model;

namespace Xapi.Server.Dispatch;

/// <summary>
/// An implicit field setter that real hosts override with rules of their own
/// (<c>VM.set_is_a_template</c> registers <c>make_into_template</c> and drops the VM's metrics):
/// the message stays implicit in the datamodel, and this serves it instead of the plain write.
/// </summary>
public interface IImplicitSetter
{
    MessageMeta Message { get; }

    ValueTask SetAsync(CallContext context, string reference, object? value);
}
