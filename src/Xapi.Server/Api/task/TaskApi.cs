using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Tasks;

namespace Xapi.Server.Api;

public sealed class TaskApi(TaskManager tasks) : ITaskApi<CallContext>
{
    public ValueTask<TaskRef> Create(CallContext context, string label, string description) =>
        ValueTask.FromResult(tasks.CreateForClient(label, description, context.Session?.Value));

    public ValueTask Cancel(CallContext context, TaskRef task)
    {
        tasks.Cancel(task);
        return ValueTask.CompletedTask;
    }

    public ValueTask Destroy(CallContext context, TaskRef self)
    {
        tasks.Destroy(self);
        return ValueTask.CompletedTask;
    }
}
