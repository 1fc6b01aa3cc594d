using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

public sealed class HostApi(TimeProvider time) : IHostApi<CallContext>
{
    // The real server forwards to the named host, so a host that does not exist is HANDLE_INVALID.
    public ValueTask<DateTime> GetServertime(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        return ValueTask.FromResult(Whole(time.GetUtcNow().UtcDateTime));
    }

    public ValueTask<DateTime> GetServerLocaltime(CallContext context, HostRef host)
    {
        context.Snapshot.Get(host);
        return ValueTask.FromResult(Whole(time.GetLocalNow().DateTime));
    }

    /// <summary>
    /// The method list, as <c>system.listMethods</c> gives it. (Real hosts answer
    /// NOT_IMPLEMENTED here; listing is what a caller of this message wants.)
    /// </summary>
    public ValueTask<IReadOnlyList<string>> ListMethods(CallContext context) => ValueTask.FromResult(Dispatcher.MethodNames);

    private static DateTime Whole(DateTime value) =>
        new(value.Ticks - value.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
}
