using Xapi.Model;

namespace Xapi.Server.Tests;

public class OperationTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    [Test]
    public async Task Blocked_operations_answer_operation_blocked()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var vm = await client.CreateVmAsync("protected");
        await client.InvokeAsync("VM.add_to_blocked_operations", vm, "destroy", "keep me");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.destroy", vm), "OPERATION_BLOCKED", vm, "keep me");
        await client.InvokeAsync("VM.remove_from_blocked_operations", vm, "destroy");
        await client.InvokeAsync("VM.destroy", vm);
    }

    [Test]
    public async Task An_operation_in_progress_shows_in_current_operations_and_excludes_others()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var vm = await client.CreateVmAsync("busy");
        var token = (await client.FromAsync([$"VM/{vm}"], "", 0)).Token;
        const string task = "OpaqueRef:11111111-2222-3333-4444-555555555555";

        using (daemon.Service<OperationGuard>().Begin(Vm, vm, "clone", task))
        {
            var busy = await client.FromAsync([$"VM/{vm}"], token, 5);
            var snapshot = (IReadOnlyDictionary<string, object?>)busy.Events.Single()["snapshot"]!;
            token = busy.Token;
            Assert.Multiple(async () =>
            {
                Assert.That((IReadOnlyDictionary<string, object?>)snapshot["current_operations"]!, Is.EquivalentTo(new Dictionary<string, object?> { [task] = "clone" }));
                // Long copies run beside each other; nothing else runs beside them.
                Assert.That((IEnumerable<object?>)snapshot["allowed_operations"]!, Is.EqualTo(new[] { "export", "copy", "clone" }));
                await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.destroy", vm), "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clone", task);
            });
        }

        var idle = await client.FromAsync([$"VM/{vm}"], token, 5);
        var after = (IReadOnlyDictionary<string, object?>)idle.Events.Single()["snapshot"]!;
        Assert.Multiple(() =>
        {
            Assert.That((IReadOnlyDictionary<string, object?>)after["current_operations"]!, Is.Empty);
            Assert.That((IEnumerable<object?>)after["allowed_operations"]!, Does.Contain("destroy"));
        });
        await client.InvokeAsync("VM.destroy", vm);
    }

    [Test]
    public async Task An_operation_a_crash_left_registered_is_forgotten_when_the_daemon_starts_again()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-restart-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        const string task = "OpaqueRef:11111111-2222-3333-4444-555555555555";
        string vm;
        await using (var crashed = await TestDaemon.StartAsync(o => o.DataDir = dataDir))
        {
            using var client = await crashed.LoginAsync();
            vm = await client.CreateVmAsync("interrupted");
            // Begun and never ended, as when the daemon dies inside the operation.
            _ = crashed.Service<OperationGuard>().Begin(Vm, vm, "clone", task);
            await crashed.SettledAsync();
            await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.destroy", vm), "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clone", task);
        }

        await using var restarted = await TestDaemon.StartAsync(o => o.DataDir = dataDir);
        using var again = await restarted.LoginAsync();
        Assert.Multiple(async () =>
        {
            Assert.That((IReadOnlyDictionary<string, object?>)(await again.InvokeAsync("VM.get_current_operations", vm))!, Is.Empty);
            Assert.That((IEnumerable<object?>)(await again.InvokeAsync("VM.get_allowed_operations", vm))!, Does.Contain("destroy"));
        });
        await again.InvokeAsync("VM.destroy", vm);
    }
}
