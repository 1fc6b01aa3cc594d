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

    // The session each task was created in; a session's tasks go with it.
    private readonly ConcurrentDictionary<TaskRef, string> _owners = new();

    // Tasks clients made with task.create, and the characters of text they hold: nothing the
    // daemon runs finishes them, so they count against the pending limit until destroyed.
    private readonly ConcurrentDictionary<TaskRef, int> _clientTasks = new();
    private long _clientTaskChars;

    // Async tasks whose session ended while they ran: destroyed when they finish.
    private readonly ConcurrentDictionary<TaskRef, byte> _destroyWhenDone = new();

    public TaskManager(XapiDatabase database, ServerOptions options, TimeProvider time, ILogger<TaskManager> logger)
    {
        _database = database;
        _options = options;
        _time = time;
        _logger = logger;
    }

    public HostRef ThisHost { get; set; } = HostRef.Null;

    public int PendingCount => _pending.Count;

    /// <summary>A task a client creates with <c>task.create</c>, bounded in number and in text.</summary>
    public TaskRef CreateForClient(string label, string description, string? session)
    {
        var chars = label.Length + description.Length;
        if (!HasRoomFor(chars))
        {
            // Places held by tasks destroyed behind our back (a restored dump) are freed first.
            ForgetMissing();
            if (!HasRoomFor(chars))
            {
                throw XenApiErrors.TooManyPendingTasks();
            }
        }
        var task = Create(label, description, cancellable: true, owner: session);
        _clientTasks[task] = chars;
        Interlocked.Add(ref _clientTaskChars, chars);
        return task;
    }

    private bool HasRoomFor(int chars) =>
        _pending.Count + _clientTasks.Count < _options.MaxPendingTasks
        && Interlocked.Read(ref _clientTaskChars) + chars <= _options.ClientTaskTextLimit;

    private void ForgetMissing()
    {
        var snapshot = _database.Snapshot;
        foreach (var task in _clientTasks.Keys.Concat(_owners.Keys).Where(t => !snapshot.Exists(TaskRef.Class, t.Value)).ToList())
        {
            Forget(task);
        }
    }

    /// <summary>Drops what the manager remembers of a task whose row is gone.</summary>
    public void Forget(TaskRef task)
    {
        _owners.TryRemove(task, out _);
        _destroyWhenDone.TryRemove(task, out _);
        if (_clientTasks.TryRemove(task, out var chars))
        {
            Interlocked.Add(ref _clientTaskChars, -chars);
        }
    }

    /// <summary>Destroys a task row (task.destroy).</summary>
    public void Destroy(TaskRef task)
    {
        _database.Write(tx => tx.Delete(task));
        Forget(task);
    }

    /// <summary>Whether a session has an async call still running (its session is then kept when sessions are cut).</summary>
    public bool HasRunningTasks(string session) =>
        !_pending.IsEmpty && _pending.Keys.Any(t => _owners.TryGetValue(t, out var owner) && owner == session);

    /// <summary>
    /// A session ended: its tasks go with it, as the issue requires (real hosts leave them to
    /// the task GC). Async calls still running finish first and are destroyed when they do.
    /// </summary>
    public void DestroyTasksOf(string session)
    {
        var owned = _owners.Where(o => o.Value == session).Select(o => o.Key).ToList();
        if (owned.Count == 0)
        {
            return;
        }
        var running = owned.Where(t => _pending.ContainsKey(t)).ToList();
        foreach (var task in running)
        {
            _destroyWhenDone[task] = 0;
        }
        var done = owned.Except(running).ToList();
        _database.Write(tx =>
        {
            foreach (var task in done)
            {
                if (tx.Exists(task))
                {
                    tx.Delete(task);
                }
            }
        });
        foreach (var task in done)
        {
            Forget(task);
        }
    }

    /// <summary>Creates a pending task row, for async calls and for clients' own tasks.</summary>
    public TaskRef Create(string label, string description, bool cancellable, TaskRef? parent = null, string? owner = null)
    {
        if (_pending.Count + _clientTasks.Count >= _options.MaxPendingTasks)
        {
            throw XenApiErrors.TooManyPendingTasks();
        }
        var now = Now();
        var created = _database.Write(tx => tx.CreateTask(task =>
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
        if (owner is not null)
        {
            _owners[created] = owner;
        }
        return created;
    }

    /// <summary>Starts <paramref name="work"/> under a new task and returns the task's ref at once.</summary>
    /// <param name="owner">The session of the call; the task goes when the session does.</param>
    public TaskRef Start(string label, Func<TaskRef, CancellationToken, ValueTask<object?>> work, string? owner = null)
    {
        var cancellation = new CancellationTokenSource();
        var reference = Create(label, "", cancellable: true, owner: owner);
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
                if (_destroyWhenDone.ContainsKey(reference))
                {
                    Destroy(reference);
                }
            }
        });
        return reference;
    }

    /// <summary>
    /// Runs work that belongs to an HTTP request (a disk import or export) under a task: the
    /// client's own (<c>task_id</c>) or a new one. The task can be cancelled while it runs and
    /// ends with the work's result or error; the request going away cancels the work too.
    /// </summary>
    public Binding Bind(TaskRef? existing, string label, string? owner, CancellationToken requestAborted)
    {
        var reference = existing ?? Create(label, "", cancellable: true, owner: owner);
        var cancellation = CancellationTokenSource.CreateLinkedTokenSource(requestAborted);
        _pending[reference] = cancellation;
        return new Binding(this, reference, cancellation);
    }

    public sealed class Binding(TaskManager tasks, TaskRef task, CancellationTokenSource cancellation) : IDisposable
    {
        private bool _done;
        private int _lastPercent = -1;

        public TaskRef Task { get; } = task;

        public CancellationToken Cancellation => cancellation.Token;

        public void Succeed(object? result) => End(TaskStatusType.Success, XmlRpcWriter.ValueFragment(result), []);

        public void Fail(Exception error)
        {
            if (error is OperationCanceledException && cancellation.IsCancellationRequested)
            {
                End(TaskStatusType.Cancelled, "", XenApiErrors.TaskCancelled(Task.Value).Description.ToArray());
            }
            else
            {
                var failure = error as XenApiException ?? XenApiErrors.InternalError(error.Message);
                End(TaskStatusType.Failure, "", failure.Description.ToArray());
            }
        }

        /// <summary>
        /// Records progress when it has moved by a whole percent (or reached the end): data paths
        /// report after every piece they move (a VHD import after every 2 MiB block), and each
        /// report is a database write that wakes every event watcher.
        /// </summary>
        public void Progress(double fraction)
        {
            var percent = (int)Math.Clamp(fraction * 100, 0, 100);
            if (percent == _lastPercent)
            {
                return;
            }
            _lastPercent = percent;
            tasks.ReportProgress(Task, fraction);
        }

        private void End(TaskStatusType status, string result, IReadOnlyList<string> errorInfo)
        {
            if (!_done)
            {
                _done = true;
                tasks.Complete(Task, status, result, errorInfo);
            }
        }

        public void Dispose()
        {
            tasks._pending.TryRemove(Task, out _);
            cancellation.Dispose();
        }
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

    /// <summary>
    /// Destroys tasks that finished longer ago than the retention time and, as real hosts do,
    /// the oldest finished ones beyond <see cref="ServerOptions.MaxFinishedTasks"/>.
    /// </summary>
    public int CollectFinished()
    {
        var cutoff = Now() - _options.FinishedTaskRetention;
        var collected = _database.Write(tx =>
        {
            var finished = tx.All<TaskRecord>()
                .Where(t => t.Status is TaskStatusType.Success or TaskStatusType.Failure or TaskStatusType.Cancelled)
                .Select(t => (t.Ref, t.Finished))
                .ToList();
            var old = finished.Where(t => t.Finished < cutoff).Select(t => t.Ref).ToHashSet();
            var young = finished.Where(t => !old.Contains(t.Ref)).OrderByDescending(t => t.Finished).ToList();
            old.UnionWith(young.Skip(_options.MaxFinishedTasks).Select(t => t.Ref));
            foreach (var task in old)
            {
                tx.Delete(task);
            }
            return old;
        });
        foreach (var task in collected)
        {
            Forget(task);
        }
        return collected.Count;
    }

    private DateTime Now()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        return new DateTime(now.Ticks - now.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
    }
}
