using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Sessions;
using Xapi.Server.Tasks;

namespace Xapi.Server.Dispatch;

/// <summary>
/// What a message's implementation learns about its call and may use: the database, the
/// caller's session, the task of an <c>Async.</c> call, and the call's cancellation.
/// </summary>
public sealed class CallContext
{
    private readonly TaskManager _tasks;

    internal CallContext(MessageMeta message, XapiDatabase database, LiveSession? session, TaskRef? task, CancellationToken cancellation,
        TaskManager tasks, bool fromLocalRoot)
    {
        FromLocalRoot = fromLocalRoot;
        Message = message;
        Database = database;
        LiveSession = session;
        Task = task;
        Cancellation = cancellation;
        _tasks = tasks;
    }

    /// <summary>The call came over the local Unix socket from a root process (checked with SO_PEERCRED).</summary>
    public bool FromLocalRoot { get; }

    /// <summary>The pool's master forwarded this call here: it runs on this host as the pool's.</summary>
    public bool FromPool { get; init; }

    /// <summary>The client's address over TCP (per-source limits use it); null on the local socket.</summary>
    public System.Net.IPAddress? RemoteAddress { get; init; }

    /// <summary>The message being called.</summary>
    public MessageMeta Message { get; }

    public XapiDatabase Database { get; }

    /// <summary>The database as of now: an immutable view, typed through the generated accessors.</summary>
    public DbSnapshot Snapshot => Database.Snapshot;

    /// <summary>Runs a transaction; every change in it is visible at once or not at all.</summary>
    public T Write<T>(Func<Transaction, T> body) => Database.Write(body);

    public void Write(Action<Transaction> body) => Database.Write(body);

    /// <summary>Returns once readers see every write so far (writes become visible when durable).</summary>
    public ValueTask SettledAsync() => Database.WhenVisibleAsync(Database.CommittedGeneration, Cancellation);

    internal LiveSession? LiveSession { get; }

    /// <summary>The caller's session; null for the calls made without one (login).</summary>
    public SessionRef? Session => LiveSession is { } live ? new SessionRef(live.Ref) : null;

    /// <summary>The session of a call that must have one.</summary>
    public SessionRef RequiredSession => Session ?? throw new InvalidOperationException($"{Message.WireName} takes no session");

    /// <summary>The user the session belongs to (<c>root</c> for the local superuser).</summary>
    public string? UserName => LiveSession?.UserName;

    public bool IsLocalSuperuser => LiveSession?.IsLocalSuperuser ?? false;

    /// <summary>The task the call runs under when it was made with <c>Async.</c>.</summary>
    public TaskRef? Task { get; }

    /// <summary>Cancelled when the client goes away (sync calls) or by <c>task.cancel</c> (async calls).</summary>
    public CancellationToken Cancellation { get; }

    /// <summary>The ref that keys this call in objects' <c>current_operations</c>: its task, or a fresh one.</summary>
    public string OperationRef => _operationRef ??= Task?.Value ?? XapiDatabase.NewRef();

    // Made on first use: most calls run no operation, and every call pays for a context.
    private string? _operationRef;

    /// <summary>Long operations report how far they are; async callers see it in the task's progress.</summary>
    public void ReportProgress(double progress)
    {
        if (Task is { } task)
        {
            _tasks.ReportProgress(task, progress);
        }
    }
}
