using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server;

public sealed class ServerCallContext(XapiDatabase database, string? sessionRef, string? taskRef, CancellationToken cancellationToken, TaskManager? tasks = null)
    : CallContext
{
    public XapiDatabase Database { get; } = database;

    public override string? SessionRef { get; } = sessionRef;

    public override string? TaskRef { get; } = taskRef;

    /// <summary>Cancelled when the client goes away (sync calls) or by task.cancel (async calls).</summary>
    public CancellationToken CancellationToken { get; } = cancellationToken;

    /// <summary>The ref that keys this call in objects' current_operations: its task, or a fresh one.</summary>
    public string OperationRef { get; } = taskRef ?? XapiDatabase.NewRef();

    /// <summary>Long operations report how far they are; async callers see it in the task's progress.</summary>
    public void ReportProgress(double progress)
    {
        if (TaskRef is not null)
        {
            tasks?.ReportProgress(TaskRef, progress);
        }
    }
}
