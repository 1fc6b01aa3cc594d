using System.Net;
using System.Text.RegularExpressions;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

public class SessionLimitTests
{
    [Test]
    public async Task A_login_beyond_the_limit_destroys_the_least_recently_active_session_of_its_originator()
    {
        var time = new ManualTime();
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxSessionsPerOriginator = 3, time);
        var clients = new List<XenApiClient>();
        for (var i = 0; i < 3; i++)
        {
            clients.Add(await daemon.LoginAsync());
            time.Advance(TimeSpan.FromSeconds(1));
        }
        // The first session is used again, so the second becomes the least recently active.
        await clients[0].InvokeAsync("pool.get_all");
        time.Advance(TimeSpan.FromSeconds(1));
        using var other = daemon.Client();
        var otherSession = (string)(await other.CallAsync("session.login_with_password", ["root", TestDaemon.Password, "2.21", "another-tool"]))!;
        clients.Add(await daemon.LoginAsync());

        await XenApiAssert.FailsAsync(() => clients[1].InvokeAsync("pool.get_all"), "SESSION_INVALID", clients[1].Session!);
        Assert.Multiple(async () =>
        {
            foreach (var kept in new[] { clients[0], clients[2], clients[3] })
            {
                Assert.That(await kept.InvokeAsync("pool.get_all"), Is.Not.Empty);
            }
            Assert.That(await other.CallAsync("pool.get_all", [otherSession]), Is.Not.Empty, "another originator's sessions are not counted");
            await daemon.SettledAsync();
            Assert.That(daemon.Database.Snapshot.Count(SessionRef.Class), Is.EqualTo(4), "the destroyed session's row is gone");
        });
        foreach (var client in clients)
        {
            client.Dispose();
        }
    }

    [Test]
    public async Task A_root_session_row_stores_no_permission_names()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        var record = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("session.get_record", client.Session))!;
        Assert.That((IReadOnlyList<object?>)record["rbac_permissions"]!, Is.Empty);
    }
}

public class TaskLimitTests
{
    [Test]
    public async Task Tasks_a_client_creates_beyond_the_limit_answer_TOO_MANY_PENDING_TASKS_until_one_is_destroyed()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxPendingTasks = 3);
        using var client = await daemon.LoginAsync();
        var tasks = new List<object?>();
        for (var i = 0; i < 3; i++)
        {
            tasks.Add(await client.InvokeAsync("task.create", "t" + i, ""));
        }
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.create", "one too many", ""), "TOO_MANY_PENDING_TASKS");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("Async.VM.destroy", "OpaqueRef:missing"), "TOO_MANY_PENDING_TASKS");
        await client.InvokeAsync("task.destroy", tasks[0]);
        Assert.That(await client.InvokeAsync("task.create", "fits again", ""), Does.StartWith("OpaqueRef:"));
    }

    [Test]
    public async Task Task_text_beyond_the_limit_answers_TOO_MANY_PENDING_TASKS()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.ClientTaskTextLimit = 1000);
        using var client = await daemon.LoginAsync();
        await client.InvokeAsync("task.create", new string('a', 600), "");
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.create", "b", new string('b', 600)), "TOO_MANY_PENDING_TASKS");
    }

    [Test]
    public async Task Logging_out_destroys_the_tasks_of_the_session_and_no_others()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var leaving = await daemon.LoginAsync();
        using var staying = await daemon.LoginAsync();
        var leavingTask = await leaving.InvokeAsync("task.create", "mine", "");
        var finishedTask = await leaving.InvokeAsync("Async.VM.destroy", "OpaqueRef:missing");
        var stayingTask = await staying.InvokeAsync("task.create", "theirs", "");
        await WaitFinishedAsync(staying, finishedTask);

        await leaving.LogoutAsync();

        await XenApiAssert.FailsAsync(() => staying.InvokeAsync("task.get_record", leavingTask), "HANDLE_INVALID");
        await XenApiAssert.FailsAsync(() => staying.InvokeAsync("task.get_record", finishedTask), "HANDLE_INVALID");
        Assert.That(await staying.InvokeAsync("task.get_name_label", stayingTask), Is.EqualTo("theirs"));
    }

    [Test]
    public async Task Finished_tasks_beyond_the_limit_are_collected_oldest_first()
    {
        var time = new ManualTime();
        await using var daemon = await TestDaemon.StartAsync(o => o.MaxFinishedTasks = 2, time);
        using var client = await daemon.LoginAsync();
        var finished = new List<object?>();
        for (var i = 0; i < 3; i++)
        {
            var task = await client.InvokeAsync("Async.VM.destroy", "OpaqueRef:missing");
            await WaitFinishedAsync(client, task);
            finished.Add(task);
            time.Advance(TimeSpan.FromSeconds(2));
        }
        Assert.That(daemon.Service<TaskManager>().CollectFinished(), Is.EqualTo(1));
        await daemon.SettledAsync();
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("task.get_record", finished[0]), "HANDLE_INVALID");
        Assert.That(await client.InvokeAsync("task.get_status", finished[2]), Is.EqualTo("failure"));
    }

    private static async Task WaitFinishedAsync(XenApiClient client, object? task)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while ((string?)await client.InvokeAsync("task.get_status", task) == "pending")
        {
            Assert.That(DateTime.UtcNow, Is.LessThan(deadline), "the task did not finish");
            await Task.Delay(10);
        }
    }
}

public class AlertLimitTests
{
    [Test]
    public async Task An_alert_beyond_the_count_limit_succeeds_and_removes_the_oldest()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.MessageLimit = 3);
        using var client = await daemon.LoginAsync();
        var poolUuid = await PoolUuidAsync(client);
        var alerts = new List<object?>();
        for (var i = 0; i < 4; i++)
        {
            alerts.Add(await client.InvokeAsync("message.create", "ALERT" + i, 1L, "Pool", poolUuid, "body"));
        }
        var remaining = (IReadOnlyList<object?>)(await client.InvokeAsync("message.get_all"))!;
        Assert.That(remaining, Is.EquivalentTo(alerts.Skip(1)));
    }

    [Test]
    public async Task Alerts_beyond_the_text_limit_remove_the_oldest()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.MessageTextLimit = 1000);
        using var client = await daemon.LoginAsync();
        var poolUuid = await PoolUuidAsync(client);
        var alerts = new List<object?>();
        for (var i = 0; i < 3; i++)
        {
            alerts.Add(await client.InvokeAsync("message.create", "BIG", 1L, "Pool", poolUuid, new string('x', 400)));
        }
        var remaining = (IReadOnlyList<object?>)(await client.InvokeAsync("message.get_all"))!;
        Assert.That(remaining, Is.EquivalentTo(alerts.Skip(1)));
    }

    private static async Task<string> PoolUuidAsync(XenApiClient client)
    {
        var pool = ((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0];
        return (string)(await client.InvokeAsync("pool.get_uuid", pool))!;
    }
}

public class LogSafetyTests
{
    private const string Forged = "2026-01-01 00:00:00.000 +00:00 [INF] Xapi.Server.Sessions.SessionManager: Session 0 created for root";
    private static readonly Regex EntryStart = new(@"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} [+-]\d{2}:\d{2} \[[A-Z]{3}\] ", RegexOptions.Compiled);

    [Test]
    public async Task A_line_break_in_a_login_originator_cannot_forge_a_log_line()
    {
        var (lines, _) = await LogOfAsync(o => { }, async daemon =>
        {
            using var client = daemon.Client();
            await client.CallAsync("session.login_with_password", ["root", TestDaemon.Password, "2.21", "tool\n" + Forged]);
            await XenApiAssert.FailsAsync(() => client.CallAsync("session.login_with_password", ["root", "wrong", "2.21", "x\r\n" + Forged]),
                "SESSION_AUTHENTICATION_FAILED");
        });
        Assert.Multiple(() =>
        {
            Assert.That(lines.Where(l => l.StartsWith("2026-01-01", StringComparison.Ordinal)), Is.Empty, "no line starts as the forged entry");
            Assert.That(lines.Where(l => l.Length > 0 && !EntryStart.IsMatch(l) && !l.StartsWith("    ", StringComparison.Ordinal)), Is.Empty,
                "every line is an entry or an indented continuation");
            Assert.That(lines.Count(l => l.Contains(@"tool\n2026-01-01", StringComparison.Ordinal)), Is.EqualTo(1), "the originator is logged, escaped");
        });
    }

    [Test]
    public async Task Long_values_are_cut_in_the_log()
    {
        var (lines, bytes) = await LogOfAsync(o => { }, async daemon =>
        {
            using var client = daemon.Client();
            await XenApiAssert.FailsAsync(() => client.LoginAsync(new string('u', 250_000), "wrong"), "SESSION_AUTHENTICATION_FAILED");
        });
        Assert.Multiple(() =>
        {
            Assert.That(bytes, Is.LessThan(10_000), "log size after a 250 KB user name");
            Assert.That(lines.Any(l => l.Contains("…(+249744 chars)", StringComparison.Ordinal)), Is.True);
        });
    }

    [Test]
    public async Task Repeated_failed_logins_are_logged_a_limited_number_of_times()
    {
        var (lines, _) = await LogOfAsync(o => o.UnauthenticatedLogLinesPerMinute = 2, async daemon =>
        {
            for (var i = 0; i < 5; i++)
            {
                var (client, http) = LoginThrottleTests.SourceClient(daemon, IPAddress.Parse("127.0.0." + (10 + i)));
                await XenApiAssert.FailsAsync(() => client.LoginAsync("root", "wrong"), "SESSION_AUTHENTICATION_FAILED");
                client.Dispose();
                http.Dispose();
            }
        });
        Assert.That(lines.Count(l => l.Contains("Failed login", StringComparison.Ordinal)), Is.EqualTo(2));
    }

    private static async Task<(List<string> Lines, long Bytes)> LogOfAsync(Action<ServerOptions> configure, Func<TestDaemon, Task> act)
    {
        var logDir = Directory.CreateTempSubdirectory("xapi-log-").FullName;
        using var cleanup = new DirectoryCleanup(logDir);
        var logFile = Path.Combine(logDir, "xapi.log");
        await using (var daemon = await TestDaemon.StartAsync(o =>
        {
            o.LogFile = logFile;
            o.LogLevel = "Information";
            o.FailedLoginDelay = TimeSpan.FromMilliseconds(50);
            configure(o);
        }))
        {
            await act(daemon);
        }
        // The file sink rolls daily, so the file carries the date in its name.
        var files = Directory.GetFiles(logDir, "xapi*.log");
        var lines = files.SelectMany(File.ReadAllLines).ToList();
        return (lines, files.Sum(f => new FileInfo(f).Length));
    }
}
