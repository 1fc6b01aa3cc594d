using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Server.Hosting;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tasks;

/// <summary>
/// Runs <c>Async.</c> calls as tasks: a <c>task</c> row created pending, the work run in the
/// background, then success (result as an XML-RPC value fragment), failure (error_info) or,
/// after <c>task.cancel</c>, cancelled. Finished tasks are collected after a while.
/// </summary>
public sealed class TaskManager
{
    // What real hosts store in task.type when the result has no declared type.
    private const string UntypedResult = "<none/>";

    private readonly XapiDatabase _database;
    private readonly ServerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<TaskRef, CancellationTokenSource> _pending = new();

    public TaskManager(XapiDatabase database, ServerOptions options, TimeProvider time, ILogger<TaskManager> logger)
    {
        _database = database;
        _options = options;
        _time = time;
        _logger = logger;
    }

    public HostRef ThisHost { get; set; } = HostRef.Null;

    public int PendingCount => _pending.Count;

    /// <summary>Creates a pending task row, for async calls and for clients' own tasks.</summary>
    public TaskRef Create(string label, string description, bool cancellable, TaskRef? parent = null)
    {
        if (_pending.Count >= _options.MaxPendingTasks)
        {
            throw XenApiErrors.TooManyPendingTasks();
        }
        var now = Now();
        return _database.Write(tx => tx.CreateTask(task =>
        {
            task.NameLabel = label;
            task.NameDescription = description;
            task.Status = TaskStatusType.Pending;
            task.Created = now;
            task.ResidentOn = ThisHost;
            task.Type = UntypedResult;
            task.SubtaskOf = parent ?? TaskRef.Null;
            task.AllowedOperations = cancellable ? [TaskAllowedOperations.Cancel] : [];
        }));
    }

    /// <summary>Starts <paramref name="work"/> under a new task and returns the task's ref at once.</summary>
    public TaskRef Start(string label, Func<TaskRef, CancellationToken, ValueTask<object?>> work)
    {
        var cancellation = new CancellationTokenSource();
        var reference = Create(label, "", cancellable: true);
        _pending[reference] = cancellation;
        // The work must not inherit the request's context (its write tracking among it): it
        // outlives the request, which answers with the task at once.
        using var suppressed = ExecutionContext.SuppressFlow();
        _ = Task.Run(async () =>
        {
            try
            {
                var result = await work(reference, cancellation.Token).ConfigureAwait(false);
                Complete(reference, TaskStatusType.Success, XmlRpcWriter.ValueFragment(result), []);
            }
            catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
            {
                Complete(reference, TaskStatusType.Cancelled, "", XenApiErrors.TaskCancelled(reference.Value).Description.ToArray());
            }
            catch (XenApiException e)
            {
                Complete(reference, TaskStatusType.Failure, "", e.Description.ToArray());
            }
            catch (Exception e)
            {
                _logger.LogError(e, "Task {Task} ({Label}) failed", reference, label);
                Complete(reference, TaskStatusType.Failure, "", XenApiErrors.InternalError(e.Message).Description.ToArray());
            }
            finally
            {
                _pending.TryRemove(reference, out _);
                cancellation.Dispose();
            }
        });
        return reference;
    }

    public void ReportProgress(TaskRef task, double progress) =>
        _database.Write(tx =>
        {
            if (tx.TryGet(task, out var row) && row.Status == TaskStatusType.Pending)
            {
                tx.Update(task, values => values.Progress = Math.Clamp(progress, 0.0, 1.0));
            }
        });

    /// <summary>
    /// Asks a pending task to stop: it turns <c>cancelling</c> and its work sees the request;
    /// the task ends <c>cancelled</c> unless the work finished first.
    /// </summary>
    public void Cancel(TaskRef task)
    {
        _database.Write(tx =>
        {
            var row = tx.Get(task);
            if (row.Status != TaskStatusType.Pending || !row.AllowedOperations.Contains(TaskAllowedOperations.Cancel))
            {
                throw XenApiErrors.OperationNotAllowed($"task {task} cannot be cancelled in its current state");
            }
            tx.Update(task, values =>
            {
                values.Status = TaskStatusType.Cancelling;
                values.AllowedOperations = [];
            });
        });
        if (_pending.TryGetValue(task, out var cancellation))
        {
            cancellation.Cancel();
        }
    }

    private void Complete(TaskRef task, TaskStatusType status, string result, IReadOnlyList<string> errorInfo)
    {
        var now = Now();
        _database.Write(tx =>
        {
            if (!tx.Exists(task))
            {
                return;
            }
            tx.Update(task, values =>
            {
                values.Status = status;
                values.Finished = now;
                values.Result = result;
                values.ErrorInfo = errorInfo;
                values.AllowedOperations = [];
                if (status == TaskStatusType.Success)
                {
                    values.Progress = 1.0;
                }
            });
        });
    }

    /// <summary>Destroys tasks that finished longer ago than the retention time.</summary>
    public int CollectFinished()
    {
        var cutoff = Now() - _options.FinishedTaskRetention;
        return _database.Write(tx =>
        {
            var old = tx.All<TaskRecord>()
                .Where(t => t.Status is TaskStatusType.Success or TaskStatusType.Failure or TaskStatusType.Cancelled && t.Finished < cutoff)
                .Select(t => t.Ref)
                .ToList();
            foreach (var task in old)
            {
                tx.Delete(task);
            }
            return old.Count;
        });
    }

    private DateTime Now()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        return new DateTime(now.Ticks - now.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
    }
}
