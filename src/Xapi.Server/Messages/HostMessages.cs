using Xapi.Model;

namespace Xapi.Server.Messages;

public sealed class HostMessages(TimeProvider time) : IHostMessages
{
    public ValueTask<object?> GetServertime(CallContext callContext, HostRef host) =>
        ValueTask.FromResult<object?>(Whole(time.GetUtcNow().UtcDateTime));

    public ValueTask<object?> GetServerLocaltime(CallContext callContext, HostRef host) =>
        ValueTask.FromResult<object?>(Whole(time.GetLocalNow().DateTime));

    private static DateTime Whole(DateTime value) =>
        new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
