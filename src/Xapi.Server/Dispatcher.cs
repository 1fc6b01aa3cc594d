using System.Collections.Frozen;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server;

/// <summary>
/// The call path: resolve the method, check arity, session and role, coerce parameters to
/// their datamodel types, run the implicit or custom implementation.
/// </summary>
public sealed class Dispatcher
{
    private const string AsyncPrefix = "Async.";

    private readonly XapiDatabase _database;
    private readonly SessionManager _sessions;
    private readonly CustomHandlers _handlers;
    private readonly TaskManager _tasks;
    private readonly OperationGuard _operations;
    private readonly ILogger _logger;
    private readonly FrozenDictionary<string, MessageMeta> _byUnderscoreName;
    private readonly FrozenSet<MessageMeta> _implemented;

    private readonly ServerOptions _options;

    public Dispatcher(XapiDatabase database, SessionManager sessions, CustomHandlers handlers, TaskManager tasks, OperationGuard operations,
        ServerOptions options, ILogger<Dispatcher> logger)
    {
        _options = options;
        _tasks = tasks;
        _operations = operations;
        _database = database;
        _sessions = sessions;
        _handlers = handlers;
        _logger = logger;
        _byUnderscoreName = ApiSchema.MessagesByWireName.Values
            .ToFrozenDictionary(m => $"{m.Owner.Name}_{m.Name}", StringComparer.Ordinal);
        _implemented = CustomImplementations.Find(handlers);
        ListMethods = ApiSchema.MessagesByWireName.Keys.Order(StringComparer.Ordinal)
            .Concat(["system.listMethods", "system.isAlive"]).Select(n => (object?)n).ToArray();
    }

    /// <summary>Every synchronous wire name, as <c>system.listMethods</c> answers.</summary>
    public IReadOnlyList<object?> ListMethods { get; }

    public CustomHandlers Handlers => _handlers;

    /// <summary>Whether a call to this message gets an answer other than NOT_IMPLEMENTED.</summary>
    public bool Answers(MessageMeta message) =>
        message.Invoke is null || message.Implicit != ImplicitKind.None || _implemented.Contains(message);

    public static MessageMeta? Resolve(string method, IReadOnlyDictionary<string, MessageMeta> byUnderscore)
    {
        if (ApiSchema.MessagesByWireName.TryGetValue(method, out var message))
        {
            return message;
        }
        return byUnderscore.TryGetValue(method, out message) ? message : null;
    }

    /// <summary>Runs a call; a call that wrote answers only once its writes are durable.</summary>
    public async ValueTask<object?> DispatchAsync(RpcRequest request, CancellationToken cancellationToken)
    {
        using var writes = WriteTracking.Begin();
        var result = await DispatchCoreAsync(request, cancellationToken).ConfigureAwait(false);
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
            throw XenApiException.Internal(
                $"the pool database is unreachable ({_database.DurabilityProblem ?? "no answer"}); the change is kept and will be stored when it returns");
        }
    }

    private async ValueTask<object?> DispatchCoreAsync(RpcRequest request, CancellationToken cancellationToken)
    {
        var method = request.MethodName;
        switch (method)
        {
            case "system.listMethods":
                return ListMethods;
            case "system.isAlive":
                return request.Params.Count == 1 ? request.Params[0] : true;
        }
        if (method.StartsWith(AsyncPrefix, StringComparison.Ordinal))
        {
            var target = Resolve(method[AsyncPrefix.Length..], _byUnderscoreName);
            if (target is null || !target.IsAsync)
            {
                throw new XenApiException(ErrorCodes.MessageMethodUnknown, method);
            }
            var call = Prepare(target, request.Params);
            // The task outlives the HTTP request, so it gets its own cancellation, driven by task.cancel.
            return _tasks.Start(AsyncPrefix + target.WireName, (taskRef, taskCancellation) =>
                ExecuteAsync(call, new ServerCallContext(_database, call.SessionRef, taskRef, taskCancellation, _tasks)));
        }
        var message = Resolve(method, _byUnderscoreName) ?? throw new XenApiException(ErrorCodes.MessageMethodUnknown, method);
        var prepared = Prepare(message, request.Params);
        return await ExecuteAsync(prepared, new ServerCallContext(_database, prepared.SessionRef, null, cancellationToken, _tasks)).ConfigureAwait(false);
    }

    private sealed record PreparedCall(MessageMeta Message, object?[] Args, string? SessionRef);

    /// <summary>Checks arity, session, role and lifecycle, and coerces parameters to their types.</summary>
    private PreparedCall Prepare(MessageMeta message, IReadOnlyList<object?> parameters)
    {
        var offset = message.TakesSession ? 1 : 0;
        var received = parameters.Count - offset;
        if (received < message.MinimumArity || received > message.Params.Count)
        {
            throw new XenApiException(ErrorCodes.MessageParameterCountMismatch, message.WireName,
                message.Params.Count.ToString(System.Globalization.CultureInfo.InvariantCulture),
                Math.Max(received, 0).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        string? sessionRef = null;
        if (message.TakesSession)
        {
            var session = _sessions.Validate(parameters[0]);
            sessionRef = session.Ref;
            if ((session.Roles & message.Roles) == 0 && !session.Roles.HasFlag(RoleSet.PoolAdmin))
            {
                throw new XenApiException(ErrorCodes.RbacPermissionDenied, message.WireName.ToLowerInvariant(), "No permission in the user session");
            }
        }
        if (message.Lifecycle == Lifecycle.Removed)
        {
            throw new XenApiException(ErrorCodes.MessageRemoved);
        }
        var args = new object?[message.Params.Count];
        for (var i = 0; i < args.Length; i++)
        {
            var param = message.Params[i];
            args[i] = i < received ? param.Type.Coerce(parameters[i + offset], param.Name) : DefaultFor(message, param);
        }
        return new PreparedCall(message, args, sessionRef);
    }

    private async ValueTask<object?> ExecuteAsync(PreparedCall call, ServerCallContext context)
    {
        var message = call.Message;
        if (message.Implicit != ImplicitKind.None && (message.Invoke is null || !_implemented.Contains(message)))
        {
            return GenericMessages.Invoke(message, call.Args, _database, _operations, context);
        }
        return await message.Invoke!(_handlers, context, call.Args).ConfigureAwait(false);
    }

    private static object? DefaultFor(MessageMeta message, ParamMeta param) => (message.WireName, param.Name) switch
    {
        ("session.login_with_password", "version") => "1.1",
        _ => param.Type.ZeroValue(),
    };

    /// <summary>Runs a call and turns every outcome into a result or a XenAPI error.</summary>
    public async ValueTask<(object? Result, XenApiException? Error)> InvokeAsync(RpcRequest request, CancellationToken cancellationToken)
    {
        try
        {
            return (await DispatchAsync(request, cancellationToken).ConfigureAwait(false), null);
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
            return (null, XenApiException.Internal(e.Message));
        }
    }
}
