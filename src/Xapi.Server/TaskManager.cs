using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server;

/// <summary>
/// Runs <c>Async.</c> calls as tasks: a <c>task</c> row created pending, the work run in the
/// background, then success (result as an XML-RPC value fragment), failure (error_info) or,
/// after <c>task.cancel</c>, cancelled. Finished tasks are collected after a while.
/// </summary>
public sealed class TaskManager
{
    private static readonly ClassMeta TaskClass = ApiSchema.Class("task");
    private static readonly FieldMeta Status = TaskClass.FieldsByName["status"];
    private static readonly FieldMeta Finished = TaskClass.FieldsByName["finished"];
    private static readonly FieldMeta Progress = TaskClass.FieldsByName["progress"];
    private static readonly FieldMeta Result = TaskClass.FieldsByName["result"];
    private static readonly FieldMeta ErrorInfo = TaskClass.FieldsByName["error_info"];
    private static readonly FieldMeta AllowedOperations = TaskClass.FieldsByName["allowed_operations"];

    private readonly XapiDatabase _database;
    private readonly ServerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _pending = new(StringComparer.Ordinal);

    public TaskManager(XapiDatabase database, ServerOptions options, TimeProvider time, ILogger<TaskManager> logger)
    {
        _database = database;
        _options = options;
        _time = time;
        _logger = logger;
    }

    public string HostRef { get; set; } = XType.NullRef;

    public int PendingCount => _pending.Count;

    /// <summary>Creates a pending task row, for async calls and for clients' own tasks.</summary>
    public string Create(string label, string description, bool cancellable, string? parent = null)
    {
        if (_pending.Count >= _options.MaxPendingTasks)
        {
            throw new XenApiException("TOO_MANY_PENDING_TASKS");
        }
        var now = Now();
        return _database.Write(tx => tx.Create(TaskClass, new Dictionary<string, object?>
        {
            ["name_label"] = label,
            ["name_description"] = description,
            ["status"] = "pending",
            ["progress"] = 0.0,
            ["created"] = now,
            ["finished"] = XType.Epoch,
            ["resident_on"] = HostRef,
            ["type"] = "<none/>",
            ["result"] = "",
            ["error_info"] = ValueSet.Empty,
            ["subtask_of"] = parent ?? XType.NullRef,
            ["allowed_operations"] = cancellable ? new object?[] { "cancel" } : ValueSet.Empty,
        })).Ref;
    }

    /// <summary>Starts <paramref name="work"/> under a new task and returns the task's ref at once.</summary>
    public string Start(string label, Func<string, CancellationToken, ValueTask<object?>> work)
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
                Complete(reference, "success", XmlRpcWriter.ValueFragment(result), []);
            }
            catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
            {
                Complete(reference, "cancelled", "", ["TASK_CANCELLED", reference]);
            }
            catch (XenApiException e)
            {
                Complete(reference, "failure", "", e.Description.Select(d => (object?)d).ToArray());
            }
            catch (Exception e)
            {
                _logger.LogError(e, "Task {Task} ({Label}) failed", reference, label);
                Complete(reference, "failure", "", [ErrorCodes.InternalError, e.Message]);
            }
            finally
            {
                _pending.TryRemove(reference, out _);
                cancellation.Dispose();
            }
        });
        return reference;
    }

    public void ReportProgress(string taskRef, double progress) =>
        _database.Write(tx =>
        {
            if (tx.TryGet(TaskClass, taskRef, out var row) && (string?)row[Status] == "pending")
            {
                tx.Set(TaskClass, taskRef, Progress, Math.Clamp(progress, 0.0, 1.0));
            }
        });

    /// <summary>
    /// Asks a pending task to stop: it turns <c>cancelling</c> and its work sees the request;
    /// the task ends <c>cancelled</c> unless the work finished first.
    /// </summary>
    public void Cancel(string taskRef)
    {
        _database.Write(tx =>
        {
            var row = tx.Get(TaskClass, taskRef);
            var allowed = (IReadOnlyList<object?>)row[AllowedOperations]!;
            if ((string?)row[Status] != "pending" || !allowed.Contains("cancel"))
            {
                throw new XenApiException("OPERATION_NOT_ALLOWED", $"task {taskRef} cannot be cancelled in its current state");
            }
            tx.Update(TaskClass, taskRef, values =>
            {
                values[Status.Ordinal] = "cancelling";
                values[AllowedOperations.Ordinal] = ValueSet.Empty;
            });
        });
        if (_pending.TryGetValue(taskRef, out var cancellation))
        {
            cancellation.Cancel();
        }
    }

    private void Complete(string reference, string status, string result, object?[] errorInfo)
    {
        var now = Now();
        _database.Write(tx =>
        {
            if (!tx.TryGet(TaskClass, reference, out _))
            {
                return;
            }
            tx.Update(TaskClass, reference, values =>
            {
                values[Status.Ordinal] = status;
                values[Finished.Ordinal] = now;
                values[Result.Ordinal] = result;
                values[ErrorInfo.Ordinal] = errorInfo;
                values[AllowedOperations.Ordinal] = ValueSet.Empty;
                if (status == "success")
                {
                    values[Progress.Ordinal] = 1.0;
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
            var old = tx.All(TaskClass)
                .Where(r => (string?)r[Status] is "success" or "failure" or "cancelled" && (DateTime)r[Finished]! < cutoff)
                .Select(r => r.Ref)
                .ToList();
            foreach (var reference in old)
            {
                tx.Delete(TaskClass, reference);
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
