using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// A guest that takes its time over a clean shutdown: the client may cancel the task, or shut the
/// VM down hard, which takes over from the clean shutdown rather than waiting behind it.
/// </summary>
public class VmCancellationTests
{
    private TestDaemon _daemon = null!;
    private XenApiClient _client = null!;

    [OneTimeSetUp]
    public async Task StartDaemonAsync()
    {
        _daemon = await TestDaemon.StartAsync(o =>
        {
            o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(20);
            // The guest acknowledges at once but takes an hour to finish.
            o.SimulatedShutdownDelay = TimeSpan.FromHours(1);
        });
        _client = await _daemon.LoginAsync();
    }

    [OneTimeTearDown]
    public async Task StopDaemonAsync()
    {
        _client.Dispose();
        await _daemon.DisposeAsync();
    }

    private async Task<string> RunningWithAgentAsync(string name)
    {
        var vm = await _client.CreateVmAsync(name, withDevices: false);
        await _client.InvokeAsync("VM.start", vm, false, false);
        await _client.UntilVmAsync(vm, r => (string)r["guest_metrics"]! != Xapi.Model.XType.NullRef);
        return vm;
    }

    private async Task WaitForOperationAsync(string vm, string operation) =>
        await _client.UntilVmAsync(vm, r => ((IReadOnlyDictionary<string, object?>)r["current_operations"]!).Values.Contains(operation));

    [Test]
    public async Task A_hard_shutdown_takes_over_from_a_clean_one_the_guest_is_slow_to_finish()
    {
        var vm = await RunningWithAgentAsync("slow guest");
        var clean = (string)(await _client.InvokeAsync("Async.VM.clean_shutdown", vm))!;
        await WaitForOperationAsync(vm, "clean_shutdown");

        await _client.InvokeAsync("VM.hard_shutdown", vm);

        var task = await _client.WatchTaskAsync(clean);
        Assert.That(task["status"], Is.EqualTo("failure"));
        Assert.That((IReadOnlyList<object?>)task["error_info"]!, Is.EqualTo(new object?[] { "TASK_CANCELLED", clean }));
        Assert.That(await _client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task A_cancelled_clean_shutdown_leaves_the_VM_running()
    {
        var vm = await RunningWithAgentAsync("cancelled");
        var clean = (string)(await _client.InvokeAsync("Async.VM.clean_shutdown", vm))!;
        await WaitForOperationAsync(vm, "clean_shutdown");

        await _client.InvokeAsync("task.cancel", clean);

        var task = await _client.WatchTaskAsync(clean);
        Assert.That(task["status"], Is.EqualTo("cancelled"));
        var record = await _client.UntilVmAsync(vm, r => ((IReadOnlyDictionary<string, object?>)r["current_operations"]!).Count == 0);
        Assert.That(record["power_state"], Is.EqualTo("Running"));
        Assert.That((IReadOnlyList<object?>)record["allowed_operations"]!, Does.Contain("clean_shutdown"));
        await _client.InvokeAsync("VM.hard_shutdown", vm);
    }
}
