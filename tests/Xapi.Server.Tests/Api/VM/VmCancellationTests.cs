using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// A guest that takes its time over a clean shutdown: the client may cancel the task, or shut the
/// VM down hard, which takes over from the clean shutdown rather than waiting behind it.
/// </summary>
public class VmCancellationTests() : SimulatedHostFixture(o =>
{
    o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(20);
    // The guest acknowledges at once but takes an hour to finish.
    o.SimulatedShutdownDelay = TimeSpan.FromHours(1);
})
{

    private async Task<string> RunningWithAgentAsync(string name)
    {
        var vm = await Client.CreateVmAsync(name, withDevices: false);
        await Client.InvokeAsync("VM.start", vm, false, false);
        await Client.UntilVmAsync(vm, r => (string)r["guest_metrics"]! != Xapi.Model.XType.NullRef);
        return vm;
    }

    private async Task WaitForOperationAsync(string vm, string operation) =>
        await Client.UntilVmAsync(vm, r => ((IReadOnlyDictionary<string, object?>)r["current_operations"]!).Values.Contains(operation));

    [Test]
    public async Task A_hard_shutdown_takes_over_from_a_clean_one_the_guest_is_slow_to_finish()
    {
        var vm = await RunningWithAgentAsync("slow guest");
        var clean = (string)(await Client.InvokeAsync("Async.VM.clean_shutdown", vm))!;
        await WaitForOperationAsync(vm, "clean_shutdown");

        await Client.InvokeAsync("VM.hard_shutdown", vm);

        var task = await Client.WatchTaskAsync(clean);
        Assert.That(task["status"], Is.EqualTo("failure"));
        Assert.That((IReadOnlyList<object?>)task["error_info"]!, Is.EqualTo(new object?[] { "TASK_CANCELLED", clean }));
        Assert.That(await Client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"));
    }

    [Test]
    public async Task A_cancelled_clean_shutdown_leaves_the_VM_running()
    {
        var vm = await RunningWithAgentAsync("cancelled");
        var clean = (string)(await Client.InvokeAsync("Async.VM.clean_shutdown", vm))!;
        await WaitForOperationAsync(vm, "clean_shutdown");

        await Client.InvokeAsync("task.cancel", clean);

        var task = await Client.WatchTaskAsync(clean);
        Assert.That(task["status"], Is.EqualTo("cancelled"));
        var record = await Client.UntilVmAsync(vm, r => ((IReadOnlyDictionary<string, object?>)r["current_operations"]!).Count == 0);
        Assert.That(record["power_state"], Is.EqualTo("Running"));
        Assert.That((IReadOnlyList<object?>)record["allowed_operations"]!, Does.Contain("clean_shutdown"));
        await Client.InvokeAsync("VM.hard_shutdown", vm);
    }
}
