using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// A task still pending when the daemon is killed belongs to work that died with it. Real hosts
/// keep no task across a restart (the class is not persisted, and <c>Cancel_tasks.cancel_tasks_on_host</c>
/// destroys any pending or cancelling one at start-up), so a client polling one gets HANDLE_INVALID
/// instead of waiting forever, and the object it ran on is free again. Here tasks are a transient
/// class too (never journalled), and the operations they held are forgotten at start-up.
/// </summary>
[Category("Crash")]
public class InterruptedTaskTests
{
    private const string Password = "task-password";
    private const int SigKill = 128 + 9;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Test]
    public async Task A_task_pending_when_the_daemon_is_killed_is_gone_after_the_restart_and_its_vdi_is_free()
    {
        var dataDir = Directory.CreateTempSubdirectory("xtask").FullName;
        try
        {
            string vdi;
            string task;
            using (var doomed = await DaemonProcess.StartAsync(dataDir, Password, new Dictionary<string, string> { [Xapi.Storage.CrashPoints.Variable] = "snapshot.linked" }))
            {
                using var client = new XenApiClient(doomed.Uri);
                await client.LoginAsync("root", Password);
                var sr = await CoalesceCrashTests.DefaultSrAsync(client);
                vdi = await CoalesceCrashTests.CreateVdiAsync(client, sr, 4L << 20);
                // A client's own task, acknowledged (so durable) before the kill, is pending too.
                task = (string)(await client.InvokeAsync("task.create", "waiting", "a client's task"))!;
                try
                {
                    await client.InvokeAsync("Async.VDI.snapshot", vdi, new Dictionary<string, object?>());
                }
                catch (HttpRequestException)
                {
                    // The daemon may die before it answers; the snapshot's task was written first.
                }
                Assert.That(await doomed.WaitForExitAsync(Deadline), Is.EqualTo(SigKill), "killed at the crash point, inside the snapshot");
            }

            using var daemon = await DaemonProcess.StartAsync(dataDir, Password);
            using var restarted = new XenApiClient(daemon.Uri);
            await restarted.LoginAsync("root", Password);
            var tasks = (IReadOnlyDictionary<string, object?>)(await restarted.InvokeAsync("task.get_all_records"))!;
            Assert.That(tasks.Values.Cast<IReadOnlyDictionary<string, object?>>().Select(t => $"{t["name_label"]}: {t["status"]}"), Is.Empty, "tasks left from the last run");
            var gone = await Assert.ThrowsAsync<XenApiException>(async () => await restarted.InvokeAsync("task.get_status", task));
            Assert.That(gone!.Code, Is.EqualTo("HANDLE_INVALID"));
            Assert.That(gone.Parameters, Is.EqualTo(new[] { "task", task }));
            Assert.That((IReadOnlyDictionary<string, object?>)(await restarted.InvokeAsync("VDI.get_current_operations", vdi))!, Is.Empty, "the interrupted snapshot's hold on the VDI");
            Assert.That(await restarted.InvokeAsync("VDI.snapshot", vdi, new Dictionary<string, object?>()), Is.Not.Null, "the VDI can be snapshotted again");
        }
        finally
        {
            Directory.Delete(dataDir, recursive: true);
        }
    }
}
