using Xapi.Model;

namespace Xapi.Server.Messages;

public sealed class TaskMessages(TaskManager tasks) : ITaskMessages
{
    public ValueTask<object?> Create(CallContext callContext, string label, string description) =>
        ValueTask.FromResult<object?>(tasks.Create(label, description, cancellable: true));

    public ValueTask<object?> Cancel(CallContext callContext, TaskRef task)
    {
        tasks.Cancel(task.Value);
        return ValueTask.FromResult<object?>(null);
    }

    public ValueTask<object?> Destroy(CallContext callContext, TaskRef self)
    {
        ((ServerCallContext)callContext).Database.Write(tx => tx.Delete(ApiSchema.Class("task"), self.Value));
        return ValueTask.FromResult<object?>(null);
    }
}
