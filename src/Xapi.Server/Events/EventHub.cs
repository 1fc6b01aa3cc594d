using Xapi.Database;

namespace Xapi.Server.Events;

/// <summary>Wakes every waiter when a transaction commits; waiters then look at the new snapshot.</summary>
public sealed class EventHub
{
    private TaskCompletionSource _nextCommit = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public EventHub(XapiDatabase database) => database.Committed += _ => Signal();

    /// <summary>A task that completes at the next commit after this call.</summary>
    public Task NextCommit => Volatile.Read(ref _nextCommit).Task;

    public void Signal()
    {
        var previous = Interlocked.Exchange(ref _nextCommit, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        previous.TrySetResult();
    }
}
