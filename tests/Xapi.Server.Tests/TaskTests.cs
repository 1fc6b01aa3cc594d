using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>A VM.start that only reports progress and waits to be cancelled: a long operation.</summary>
internal sealed class LongRunningVmApi : IVMApi<CallContext>
{
    public async ValueTask Start(CallContext context, VMRef vm, bool startPaused, bool force)
    {
        context.ReportProgress(0.5);
        await Task.Delay(Timeout.Infinite, context.Cancellation);
    }
}

internal static class TaskClient
{
    /// <summary>Follows a task through event.from until <paramref name="until"/> holds; returns its record.</summary>
    public static async Task<IReadOnlyDictionary<string, object?>> WatchTaskAsync(this XenApiClient client, string task,
        Func<IReadOnlyDictionary<string, object?>, bool>? until = null)
    {
        until ??= r => (string)r["status"]! is not ("pending" or "cancelling");
        var token = "";
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            deadline.Token.ThrowIfCancellationRequested();
            var batch = await client.FromAsync([$"task/{task}"], token, 5);
            token = batch.Token;
            foreach (var e in batch.Events.Where(e => e.ContainsKey("snapshot")))
            {
                var record = (IReadOnlyDictionary<string, object?>)e["snapshot"]!;
                if (until(record))
                {
                    return record;
                }
            }
        }
    }
}

[TestFixtureSource(typeof(RoundTripTests), nameof(RoundTripTests.Protocols))]
public class TaskTests(RpcDialect dialect)
{
    private static Task<TestDaemon> StartAsync(Action<ServerOptions>? configure = null, TimeProvider? time = null) =>
        TestDaemon.StartAsync(configure, time, (handlers, _) => handlers.VM = new LongRunningVmApi());

    [Test]
    public async Task An_async_call_returns_a_task_whose_result_is_an_xml_rpc_value_fragment()
    {
        await using var daemon = await StartAsync();
        using var client = await daemon.LoginAsync(dialect);
        var record = ApiSchema.Class("network").MinimalRecord();
        record["name_label"] = "async network";
        var task = (string)(await client.InvokeAsync("Async.network.create", record))!;
        var done = await client.WatchTaskAsync(task);
        var result = (string)done["result"]!;
        var network = XmlRpcReader.ReadValueFragment(result, RpcLimits.Default) as string;
        Assert.Multiple(async () =>
        {
            Assert.That(task, Does.StartWith("OpaqueRef:"));
            Assert.That(done["status"], Is.EqualTo("success"));
            Assert.That(XType.Parse("float").Coerce(done["progress"], "progress"), Is.EqualTo(1.0));
            Assert.That(result, Does.Match("^<value>OpaqueRef:[^<]+</value>$"));
            Assert.That(await client.InvokeAsync("network.get_name_label", network), Is.EqualTo("async network"));
            Assert.That(done["resident_on"], Is.Not.EqualTo(XType.NullRef));
            Assert.That(done["name_label"], Is.EqualTo("Async.network.create"));
            Assert.That((DateTime)XType.Parse("datetime").Coerce(done["finished"], "finished")!, Is.GreaterThanOrEqualTo((DateTime)XType.Parse("datetime").Coerce(done["created"], "created")!));
        });
    }

    [Test]
    public async Task A_failing_async_call_fails_its_task_with_the_error()
    {
        await using var daemon = await StartAsync();
        using var client = await daemon.LoginAsync(dialect);
        var task = (string)(await client.InvokeAsync("Async.VM.destroy", "OpaqueRef:missing"))!;
        var done = await client.WatchTaskAsync(task);
        Assert.Multiple(() =>
        {
            Assert.That(done["status"], Is.EqualTo("failure"));
            Assert.That((IEnumerable<object?>)done["error_info"]!, Is.EqualTo(new[] { "HANDLE_INVALID", "VM", "OpaqueRef:missing" }));
        });
    }

    [Test]
    public async Task A_pending_task_reports_progress_and_can_be_cancelled()
    {
        await using var daemon = await StartAsync();
        using var client = await daemon.LoginAsync(dialect);
        var vm = await client.CreateVmAsync("long");
        var task = (string)(await client.InvokeAsync("Async.VM.start", vm, false, false))!;
        var running = await client.WatchTaskAsync(task, r => XType.Parse("float").Coerce(r["progress"], "p") is 0.5);
        Assert.Multiple(() =>
        {
            Assert.That(running["status"], Is.EqualTo("pending"));
            Assert.That((IEnumerable<object?>)running["allowed_operations"]!, Does.Contain("cancel"));
        });
        await client.InvokeAsync("task.cancel", task);
        var done = await client.WatchTaskAsync(task);
        Assert.Multiple(async () =>
        {
            Assert.That(done["status"], Is.EqualTo("cancelled"));
            Assert.That((IEnumerable<object?>)done["error_info"]!, Is.EqualTo(new[] { "TASK_CANCELLED", task }));
            await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.cancel", task), "OPERATION_NOT_ALLOWED");
        });
    }

    [Test]
    public async Task Pending_tasks_are_bounded()
    {
        await using var daemon = await StartAsync(o => o.MaxPendingTasks = 2);
        using var client = await daemon.LoginAsync(dialect);
        var vm = await client.CreateVmAsync("busy");
        var first = (string)(await client.InvokeAsync("Async.VM.start", vm, false, false))!;
        var second = (string)(await client.InvokeAsync("Async.VM.start", vm, false, false))!;
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("Async.VM.start", vm, false, false), "TOO_MANY_PENDING_TASKS");
        await client.InvokeAsync("task.cancel", first);
        await client.InvokeAsync("task.cancel", second);
        await client.WatchTaskAsync(first);
        await client.WatchTaskAsync(second);
        var third = (string)(await client.InvokeAsync("Async.VM.start", vm, false, false))!;
        await client.InvokeAsync("task.cancel", third);
        Assert.That((await client.WatchTaskAsync(third))["status"], Is.EqualTo("cancelled"));
    }

    [Test]
    public async Task Clients_create_update_and_destroy_their_own_tasks()
    {
        await using var daemon = await StartAsync();
        using var client = await daemon.LoginAsync(dialect);
        var task = (string)(await client.InvokeAsync("task.create", "backup", "nightly"))!;
        await client.InvokeAsync("task.set_progress", task, 0.25);
        var record = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("task.get_record", task))!;
        Assert.Multiple(() =>
        {
            Assert.That(record["status"], Is.EqualTo("pending"));
            Assert.That(record["name_label"], Is.EqualTo("backup"));
            Assert.That(record["name_description"], Is.EqualTo("nightly"));
            Assert.That(XType.Parse("float").Coerce(record["progress"], "p"), Is.EqualTo(0.25));
        });
        await client.InvokeAsync("task.cancel", task);
        Assert.That(await client.InvokeAsync("task.get_status", task), Is.EqualTo("cancelling"));
        await client.InvokeAsync("task.set_status", task, "cancelled");
        await client.InvokeAsync("task.destroy", task);
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.get_record", task), "HANDLE_INVALID", "task", task);
    }

    [Test]
    public async Task Finished_tasks_are_collected_after_the_retention_time()
    {
        var time = new ManualTime();
        await using var daemon = await TestDaemon.StartAsync(o => o.FinishedTaskRetention = TimeSpan.FromMinutes(30), time);
        using var client = await daemon.LoginAsync(dialect);
        var task = (string)(await client.InvokeAsync("Async.VM.destroy", "OpaqueRef:missing"))!;
        await client.WatchTaskAsync(task);
        var tasks = daemon.Service<TaskManager>();
        Assert.That(tasks.CollectFinished(), Is.Zero, "a fresh task stays");
        time.Advance(TimeSpan.FromMinutes(31));
        Assert.That(tasks.CollectFinished(), Is.EqualTo(1));
        await daemon.SettledAsync();
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.get_record", task), "HANDLE_INVALID");
    }
}

public sealed class ManualTime : TimeProvider
{
    private DateTimeOffset _now = DateTimeOffset.UtcNow;

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}
