using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>A handler whose methods do not implement a message: one misspelt, one with a parameter missing.</summary>
internal sealed class MisspeltVmApi : IVMApi<CallContext>
{
    public ValueTask Strat(CallContext context, VMRef vm, bool startPaused, bool force) => ValueTask.CompletedTask;

    public ValueTask CleanShutdown(CallContext context) => ValueTask.CompletedTask;
}

/// <summary>A VM.start that runs as the VM's <c>start</c> operation and waits until released.</summary>
internal sealed class GatedVmApi : IVMApi<CallContext>
{
    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    [RunsAs<VmOperations>(VmOperations.Start)]
    public async ValueTask Start(CallContext context, VMRef vm, bool startPaused, bool force)
    {
        Started.TrySetResult();
        await Release.Task.WaitAsync(context.Cancellation);
    }
}

public class HandlerContractTests
{
    [Test]
    public void A_misspelt_or_misshapen_handler_method_is_caught()
    {
        var strays = HandlerContract.Strays(typeof(MisspeltVmApi), typeof(IVMApi<CallContext>));
        Assert.That(strays, Has.Count.EqualTo(2));
        Assert.That(strays, Has.Some.Contains("Strat").And.Some.Contains("CleanShutdown(CallContext)"));
    }

    [Test]
    public async Task A_daemon_with_a_misspelt_handler_refuses_to_start()
    {
        try
        {
            await using var daemon = await TestDaemon.StartAsync(customize: (handlers, _) => handlers.VM = new MisspeltVmApi());
            Assert.Fail("the daemon started with a handler that implements no message");
        }
        catch (InvalidOperationException e)
        {
            Assert.That(e.Message, Does.Contain("MisspeltVmApi.Strat"));
        }
    }

    [Test]
    public void The_daemons_own_handlers_implement_only_datamodel_messages()
    {
        var handlers = typeof(Dispatcher).Assembly.GetTypes()
            .SelectMany(t => t.GetInterfaces().Where(i => i.IsGenericType && i.Namespace == typeof(IVMApi<>).Namespace && i.Name.EndsWith("Api`1", StringComparison.Ordinal)).Select(i => (t, i)))
            .ToList();
        Assert.That(handlers, Has.Count.GreaterThanOrEqualTo(7));
        Assert.That(handlers.SelectMany(h => HandlerContract.Strays(h.t, h.i)), Is.Empty);
    }

    [TestCaseSource(typeof(Dialects), nameof(Dialects.All))]
    public async Task A_declared_operation_is_registered_while_its_call_runs_and_conflicts_are_refused(RpcDialect dialect)
    {
        var api = new GatedVmApi();
        await using var daemon = await TestDaemon.StartAsync(customize: (handlers, _) => handlers.VM = api);
        using var client = await daemon.LoginAsync(dialect);
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "gated";
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        var task = (string)(await client.InvokeAsync("Async.VM.start", vm, false, false))!;
        await api.Started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var current = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_current_operations", vm))!;
        Assert.That(current, Is.EquivalentTo(new Dictionary<string, object?> { [task] = "start" }));
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.start", vm, false, false), "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start", task);
        api.Release.SetResult();
        await client.WatchTaskAsync(task);
        Assert.That((IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_current_operations", vm))!, Is.Empty);

        await client.InvokeAsync("VM.add_to_blocked_operations", vm, "start", "maintenance");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.start", vm, false, false), "OPERATION_BLOCKED", vm, "maintenance");
    }
}
