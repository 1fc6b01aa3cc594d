using System.Diagnostics;
using System.Net;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>
/// 50,000 logins that never log out, from 16 clients. Budget: the daemon's managed heap grows by
/// less than 64 MB, the oldest sessions are destroyed (one originator keeps at most its 500),
/// and a client's dump of the session class, <c>event.from(["session"], "")</c>, answers in
/// under 1 s (the session class has no <c>get_all_records</c> on the wire).
/// </summary>
[Category("Load")]
[Category("Slow")]
[Explicit("50,000 logins: run by scripts/test.sh, or with --filter TestCategory=Slow")]
public class SessionFloodTests
{
    private const int Logins = 50_000;
    private const int Clients = 16;
    private const long HeapBudgetBytes = 64L << 20;
    private static readonly TimeSpan DumpBudget = TimeSpan.FromSeconds(1);

    [Test]
    public async Task Fifty_thousand_logins_without_logout_stay_bounded()
    {
        await using var daemon = await TestDaemon.StartAsync(o =>
        {
            // The hash is not under test here; each login still takes its source's turn.
            o.PasswordHashIterations = 1;
            o.MaxConcurrentPasswordChecks = 4;
        });
        using var watcher = daemon.Client(RpcDialect.JsonRpcV2);
        var watcherSession = (string)(await watcher.CallAsync("session.login_with_password", ["root", TestDaemon.Password, "2.21", "watcher"]))!;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);

        var first = "";
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            var (client, http) = LoginThrottleTests.SourceClient(daemon, IPAddress.Parse("127.0.0." + (20 + c)));
            using (http)
            using (client)
            {
                for (var i = c; i < Logins; i += Clients)
                {
                    var session = await client.LoginAsync("root", TestDaemon.Password);
                    if (i == 0)
                    {
                        first = session;
                    }
                }
            }
        })));
        TestContext.Out.WriteLine($"{Logins} logins in {watch.Elapsed.TotalSeconds:F1} s");

        GC.Collect();
        GC.WaitForPendingFinalizers();
        var growth = GC.GetTotalMemory(forceFullCollection: true) - heapBefore;
        await daemon.SettledAsync();
        var sessions = daemon.Database.Snapshot.Count(SessionRef.Class);

        watch.Restart();
        var batch = (IReadOnlyDictionary<string, object?>)(await watcher.CallAsync("event.from", [watcherSession, new[] { "session" }, "", 5.0]))!;
        var eventFrom = watch.Elapsed;
        var events = ((IReadOnlyList<object?>)batch["events"]!).Count;
        TestContext.Out.WriteLine($"heap growth {growth / 1e6:F1} MB, {sessions} sessions, event.from {eventFrom.TotalMilliseconds:F0} ms ({events} events)");

        Assert.Multiple(async () =>
        {
            Assert.That(growth, Is.LessThan(HeapBudgetBytes), "managed heap growth (bytes)");
            Assert.That(sessions, Is.LessThanOrEqualTo(new ServerOptions().MaxSessionsPerOriginator + 1), "session rows");
            await XenApiAssert.FailsAsync(() => watcher.CallAsync("pool.get_all", [first]), "SESSION_INVALID", first);
            Assert.That(eventFrom, Is.LessThan(DumpBudget), "event.from([\"session\"], \"\")");
            Assert.That(events, Is.EqualTo(sessions), "the dump lists every live session");
        });
    }
}
