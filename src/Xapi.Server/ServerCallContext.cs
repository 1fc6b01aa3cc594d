using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server;

public sealed class ServerCallContext(XapiDatabase database, string? sessionRef, string? taskRef, CancellationToken cancellationToken) : CallContext
{
    public XapiDatabase Database { get; } = database;

    public override string? SessionRef { get; } = sessionRef;

    public override string? TaskRef { get; } = taskRef;

    public CancellationToken CancellationToken { get; } = cancellationToken;
}
