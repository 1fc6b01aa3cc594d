using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Tasks;

namespace Xapi.Server.Api;

public sealed class TaskApi(TaskManager tasks) : ITaskApi<CallContext>
{
    public ValueTask<TaskRef> Create(CallContext context, string label, string description) =>
        ValueTask.FromResult(tasks.Create(label, description, cancellable: true));

    public ValueTask Cancel(CallContext context, TaskRef task)
    {
        tasks.Cancel(task);
        return ValueTask.CompletedTask;
    }

    public ValueTask Destroy(CallContext context, TaskRef self)
    {
        context.Write(tx => tx.Delete(self));
        return ValueTask.CompletedTask;
    }
}
