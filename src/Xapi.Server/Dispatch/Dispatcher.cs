using System.Collections.Frozen;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Server.Hosting;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Operations;
using Xapi.Server.Sessions;
using Xapi.Server.Tasks;

namespace Xapi.Server.Dispatch;

/// <summary>How a message is answered today.</summary>
public enum MessageCoverage
{
    /// <summary>A generated implicit message (getter, setter, create, …).</summary>
    Implicit,

    /// <summary>A custom message with a hand-written implementation.</summary>
    Implemented,

    /// <summary>A custom accessor that answers as the plain accessor, without the real server's checks.</summary>
    PlainAccessor,

    /// <summary>Answers NOT_IMPLEMENTED.</summary>
    NotImplemented,
}

/// <summary>
/// The call path: decode (done by the endpoint) → dispatch (name, arity, session, RBAC,
/// parameter types) → operation stage (the message's declared operation on its object) →
/// implementation (implicit, or the class's handler) → encode (done by the endpoint).
/// </summary>
public sealed class Dispatcher
{
    private const string AsyncPrefix = "Async.";
    private const string ListMethodsName = "system.listMethods";
    private const string IsAliveName = "system.isAlive";

    private readonly XapiDatabase _database;
    private readonly SessionManager _sessions;
    private readonly TaskManager _tasks;
    private readonly OperationGuard _operations;
    private readonly ImplicitMessages _implicit;
    private readonly Placement _placement;
    private readonly Forwarder _forwarder;
    private readonly ServerOptions _options;
    private readonly ILogger _logger;
    private readonly FrozenDictionary<string, MessageMeta> _byUnderscoreName;
    private readonly FrozenDictionary<MessageMeta, Route> _routes;

    // How one message is served, decided once at start-up.
    private sealed record Route(Func<CallContext, object?[], ValueTask<object?>>? Custom, HandlerContract.OperationDeclaration? RunsAs, MessageCoverage Coverage,
        HandlerContract.PlacementDeclaration? RunsOn = null);

    public Dispatcher(XapiDatabase database, SessionManager sessions, ApiHandlers<CallContext> handlers, TaskManager tasks, OperationGuard operations,
        ImplicitMessages implicitMessages, ServerOptions options, ILogger<Dispatcher> logger, IEnumerable<IObjectLifecycle> lifecycles,
        IEnumerable<IImplicitSetter> setters, Placement placement, Forwarder forwarder)
    {
        _placement = placement;
        _forwarder = forwarder;
        _database = database;
        _sessions = sessions;
        _tasks = tasks;
        _operations = operations;
        _implicit = implicitMessages;
        _options = options;
        _logger = logger;
        _byUnderscoreName = ApiSchema.MessagesByWireName.Values
            .ToFrozenDictionary(m => $"{m.Owner.Name}_{m.Name}", StringComparer.Ordinal);
        var routes = new Dictionary<MessageMeta, Route>();
        foreach (var binding in HandlerContract.Read(handlers))
        {
            var message = binding.Message;
            var coverage = binding.Implemented ? MessageCoverage.Implemented
                : message.IsCustomAccessor ? MessageCoverage.PlainAccessor
                : MessageCoverage.NotImplemented;
            routes[message] = new Route(handlers.Bind(message), binding.RunsAs, coverage, binding.RunsOn);
        }
        var lifecycleOf = lifecycles.ToDictionary(l => l.Class);
        var setterOf = setters.ToDictionary(s => s.Message);
        foreach (var message in ApiSchema.MessagesByWireName.Values.Where(m => !m.IsCustom))
        {
            var destroy = message.Implicit == ImplicitKind.Destroy && OperationGuard.Tracks(message.Owner, "destroy")
                ? new HandlerContract.OperationDeclaration(message.Owner, 0, "destroy")
                : null;
            routes[message] = lifecycleOf.TryGetValue(message.Owner, out var lifecycle) && message.Implicit is ImplicitKind.Create or ImplicitKind.Destroy
                ? new Route(LifecycleCall(message, lifecycle), destroy, MessageCoverage.Implemented,
                    lifecycle.RunsOn is { } selection ? new HandlerContract.PlacementDeclaration(selection, 0, message.Owner) : null)
                : setterOf.TryGetValue(message, out var setter)
                ? new Route(SetterCall(setter), null, MessageCoverage.Implemented)
                : new Route(null, destroy, MessageCoverage.Implicit);
        }
        _routes = routes.ToFrozenDictionary();
    }

    private static Func<CallContext, object?[], ValueTask<object?>> LifecycleCall(MessageMeta message, IObjectLifecycle lifecycle) =>
        message.Implicit == ImplicitKind.Create
            ? async (context, args) => await lifecycle.CreateAsync(context, ImplicitMessages.ConstructorValues(message.Owner, (ValueMap)args[0]!)).ConfigureAwait(false)
            : async (context, args) =>
            {
                await lifecycle.DestroyAsync(context, (string)args[0]!).ConfigureAwait(false);
                return null;
            };

    private static Func<CallContext, object?[], ValueTask<object?>> SetterCall(IImplicitSetter setter) =>
        async (context, args) =>
        {
            await setter.SetAsync(context, (string)args[0]!, args[1]).ConfigureAwait(false);
            return null;
        };

    /// <summary>
    /// Every synchronous wire name of the datamodel in datamodel order, as real servers answer
    /// <c>system.listMethods</c>: no <c>Async.</c> names, no <c>system.</c> names.
    /// </summary>
    public static IReadOnlyList<string> MethodNames { get; } = ApiSchema.Classes.SelectMany(c => c.Messages).Select(m => m.WireName).ToArray();

    public MessageCoverage Coverage(MessageMeta message) => _routes[message].Coverage;

    public static MessageMeta? Resolve(string method, IReadOnlyDictionary<string, MessageMeta> byUnderscore)
    {
        if (ApiSchema.MessagesByWireName.TryGetValue(method, out var message))
        {
            return message;
        }
        return byUnderscore.TryGetValue(method, out message) ? message : null;
    }

    /// <summary>Whether the call is <c>system.listMethods</c>, whose XML-RPC reply real servers send unwrapped.</summary>
    public static bool IsListMethods(RpcRequest request) => request.MethodName == ListMethodsName;

    /// <summary>Runs a call; a call that wrote answers only once its writes are durable.</summary>
    public async ValueTask<object?> DispatchAsync(RpcRequest request, CancellationToken cancellationToken, bool fromLocalRoot = false,
        System.Net.IPAddress? remoteAddress = null, bool fromPool = false)
    {
        using var writes = WriteTracking.Begin();
        object? result;
        try
        {
            result = await DispatchCoreAsync(request, cancellationToken, fromLocalRoot, remoteAddress, fromPool).ConfigureAwait(false);
        }
        catch (XenApiException)
        {
            // A refused call may have written too (undoing what it began): the caller's next
            // read must see that, so the refusal also waits until it is durable.
            await WhenDurableAsync(writes.Generation, cancellationToken).ConfigureAwait(false);
            throw;
        }
        await WhenDurableAsync(writes.Generation, cancellationToken).ConfigureAwait(false);
        return result;
    }

    // A write is acknowledged only once durable; if the store stays away, the caller hears why.
    private async ValueTask WhenDurableAsync(long generation, CancellationToken cancellationToken)
    {
        if (generation <= _database.Snapshot.Generation)
        {
            return;
        }
        try
        {
            await _database.WhenVisibleAsync(generation, cancellationToken).AsTask()
                .WaitAsync(_options.DurabilityTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw XenApiErrors.InternalError(
                $"the pool database is unreachable ({_database.DurabilityProblem ?? "no answer"}); the change is kept and will be stored when it returns");
        }
    }

    private async ValueTask<object?> DispatchCoreAsync(RpcRequest request, CancellationToken cancellationToken, bool fromLocalRoot,
        System.Net.IPAddress? remoteAddress, bool fromPool)
    {
        var method = request.MethodName;
        switch (method)
        {
            case ListMethodsName:
                return MethodNames;
            case IsAliveName:
                return request.Params.Count == 1 ? request.Params[0] : true;
        }
        if (method.StartsWith(AsyncPrefix, StringComparison.Ordinal))
        {
            var target = Resolve(method[AsyncPrefix.Length..], _byUnderscoreName);
            if (target is null || !target.IsAsync)
            {
                throw XenApiErrors.MessageMethodUnknown(method);
            }
            var call = Prepare(target, request.Params, fromPool);
            // The task outlives the HTTP request, so it gets its own cancellation, driven by task.cancel.
            return _tasks.Start(AsyncPrefix + target.WireName, (task, taskCancellation) =>
                ExecuteAsync(call, new CallContext(target, _database, call.Session, task, taskCancellation, _tasks, fromLocalRoot) { RemoteAddress = remoteAddress, FromPool = fromPool }),
                call.Session?.Ref).Value;
        }
        var message = Resolve(method, _byUnderscoreName) ?? throw XenApiErrors.MessageMethodUnknown(method);
        var prepared = Prepare(message, request.Params, fromPool);
        return await ExecuteAsync(prepared, new CallContext(message, _database, prepared.Session, null, cancellationToken, _tasks, fromLocalRoot) { RemoteAddress = remoteAddress, FromPool = fromPool }).ConfigureAwait(false);
    }

    private sealed record PreparedCall(MessageMeta Message, object?[] Args, LiveSession? Session, IReadOnlyList<object?> Parameters);

    /// <summary>Checks arity, session, role and lifecycle, and coerces parameters to their types.</summary>
    /// <param name="fromPool">Forwarded by the pool's master, which checked the session and its roles.</param>
    private PreparedCall Prepare(MessageMeta message, IReadOnlyList<object?> parameters, bool fromPool = false)
    {
        var offset = message.TakesSession ? 1 : 0;
        var received = parameters.Count - offset;
        if (received < message.MinimumArity || received > message.Params.Count)
        {
            throw XenApiErrors.MessageParameterCountMismatch(message.WireName,
                message.Params.Count.ToString(CultureInfo.InvariantCulture),
                Math.Max(received, 0).ToString(CultureInfo.InvariantCulture));
        }
        LiveSession? session = null;
        if (message.TakesSession && fromPool)
        {
            session = _sessions.Forwarded(parameters[0]);
        }
        else if (message.TakesSession)
        {
            session = _sessions.Validate(parameters[0]);
            var permission = Rbac.PermissionOf(message);
            if (!session.May(permission))
            {
                throw Rbac.Denied(permission);
            }
        }
        if (message.Lifecycle == Lifecycle.Removed)
        {
            throw XenApiErrors.MessageRemoved();
        }
        var args = new object?[message.Params.Count];
        for (var i = 0; i < args.Length; i++)
        {
            var param = message.Params[i];
            if (i < received && XmlText.FindUnrepresentable(parameters[i + offset]) is { } unrepresentable)
            {
                // Refused here, for every message over both protocols: stored, such a string would
                // make every later XML-RPC reply that carries it unparseable (the real server
                // truncates it silently at its first such character instead).
                throw XenApiErrors.InvalidValue(param.Name, XmlText.Visible(unrepresentable));
            }
            args[i] = i < received ? param.Type.Coerce(parameters[i + offset], param.Name) : param.DefaultValue;
        }
        return new PreparedCall(message, args, session, parameters);
    }

    /// <summary>The operation stage, forwarding within a pool, and the implementation.</summary>
    private async ValueTask<object?> ExecuteAsync(PreparedCall call, CallContext context)
    {
        var route = _routes[call.Message];
        // A call the master forwarded runs under the master's operation stage.
        OperationGuard.Scope? operation = route.RunsAs is { } runsAs && !context.FromPool
            ? await _operations.BeginAsync(runsAs.Class, (string)call.Args[runsAs.ArgumentIndex]!, runsAs.Operation, context.OperationRef, context.Cancellation).ConfigureAwait(false)
            : null;
        try
        {
            if (route.RunsOn is { } runsOn && !context.FromPool && _placement.RemoteHost(runsOn, call.Args, context) is { } host)
            {
                return await _forwarder.ForwardAsync(context.Snapshot, host, call.Message, call.Parameters, context.Cancellation).ConfigureAwait(false);
            }
            return route.Coverage is MessageCoverage.Implemented or MessageCoverage.NotImplemented
                ? await route.Custom!(context, call.Args).ConfigureAwait(false)
                : _implicit.Invoke(call.Message, call.Args, context);
        }
        finally
        {
            operation?.Dispose();
        }
    }

    /// <summary>Runs a call and turns every outcome into a result or a XenAPI error.</summary>
    /// <param name="fromLocalRoot">The call came over the local socket from a root process.</param>
    /// <param name="remoteAddress">The client's address over TCP, for per-source limits; null on the local socket.</param>
    /// <param name="fromPool">Forwarded by the pool's master (it carried the pool secret).</param>
    public async ValueTask<(object? Result, XenApiException? Error)> InvokeAsync(RpcRequest request, CancellationToken cancellationToken, bool fromLocalRoot = false,
        System.Net.IPAddress? remoteAddress = null, bool fromPool = false)
    {
        try
        {
            return (await DispatchAsync(request, cancellationToken, fromLocalRoot, remoteAddress, fromPool).ConfigureAwait(false), null);
        }
        catch (XenApiException e)
        {
            return (null, e);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e)
        {
            _logger.LogError(e, "Internal error in {Method}", request.MethodName);
            return (null, XenApiErrors.InternalError(e.Message));
        }
    }
}
