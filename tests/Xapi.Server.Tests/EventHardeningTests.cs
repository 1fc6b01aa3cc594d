using System.Net.Http.Headers;
using System.Text;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>What event.from does with timeouts that are not a duration and with repeated subscriptions.</summary>
[TestFixtureSource(typeof(RoundTripTests), nameof(RoundTripTests.Protocols))]
public class EventHardeningTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    // The real server reads the timeout as a time span and waits its 24-hour default when it cannot.
    private static readonly double[] Unreadable = [double.NaN, double.PositiveInfinity, double.NegativeInfinity, -1.0, 1e300];

    [Test]
    public async Task Timeouts_that_are_not_a_duration_wait_for_an_event_as_the_real_server_does()
    {
        var pool = ((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0];
        var token = (await Client.FromAsync(["pool"], "", 0)).Token;
        var clients = new List<XenApiClient>();
        foreach (var _ in Unreadable)
        {
            clients.Add(await Daemon.LoginAsync(Dialect));
        }
        var waiting = Unreadable.Select((timeout, i) => clients[i].FromAsync(["pool"], token, timeout)).ToList();
        await Task.WhenAny(Task.WhenAll(waiting), Task.Delay(300));
        foreach (var (call, timeout) in waiting.Zip(Unreadable))
        {
            if (call.IsFaulted)
            {
                Assert.Fail($"a timeout of {timeout} failed: {call.Exception!.InnerException!.Message}");
            }
            Assert.That(call.IsCompleted, Is.False, $"a timeout of {timeout} waits for an event");
        }

        await Client.InvokeAsync("event.inject", "pool", pool);
        var batches = await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(batches.Select(b => b.Events.Select(e => e["ref"]).ToList()), Is.All.EqualTo(new[] { pool }));
        clients.ForEach(c => c.Dispose());
    }

    [Test]
    public async Task Unreadable_timeouts_in_the_forms_other_clients_write_them_wait_too()
    {
        var pool = ((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0];
        var token = (await Client.FromAsync(["pool"], "", 0)).Token;
        // OCaml's %g writes inf and nan; JSON has no NaN, but a number too large to hold is infinite.
        string[] timeouts = Dialect == RpcDialect.XmlRpc ? ["<double>inf</double>", "<double>-inf</double>", "<double>nan</double>", "<double>1e999</double>"] : ["1e999", "-1e999", "\"NaN\""];
        using var http = new HttpClient();
        var waiting = new List<Task<string>>();
        foreach (var timeout in timeouts)
        {
            using var client = await Daemon.LoginAsync(Dialect);
            var body = Dialect == RpcDialect.XmlRpc
                ? $"<?xml version=\"1.0\"?><methodCall><methodName>event.from</methodName><params><param><value>{client.Session}</value></param><param><value><array><data><value>pool</value></data></array></value></param><param><value>{token}</value></param><param><value>{timeout}</value></param></params></methodCall>"
                : $"{{\"jsonrpc\":\"2.0\",\"method\":\"event.from\",\"params\":[\"{client.Session}\",[\"pool\"],\"{token}\",{timeout}],\"id\":1}}";
            waiting.Add(PostAsync(http, body));
        }
        await Task.WhenAny(Task.WhenAll(waiting), Task.Delay(300));
        foreach (var (call, timeout) in waiting.Zip(timeouts))
        {
            Assert.That(call.IsCompleted ? await call : "", Is.Empty, $"a timeout of {timeout} waits for an event");
        }
        await Client.InvokeAsync("event.inject", "pool", pool);
        foreach (var (call, timeout) in waiting.Zip(timeouts))
        {
            Assert.That(await call.WaitAsync(TimeSpan.FromSeconds(10)), Does.Contain((string)pool!).And.Not.Contain("INTERNAL_ERROR"), timeout);
        }
    }

    private async Task<string> PostAsync(HttpClient http, string body)
    {
        var isXml = Dialect == RpcDialect.XmlRpc;
        using var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue(isXml ? "text/xml" : "application/json");
        using var response = await http.PostAsync(new Uri(Daemon.Uri, isXml ? "/" : "/jsonrpc"), content);
        var text = await response.Content.ReadAsStringAsync();
        return response.IsSuccessStatusCode ? text : $"HTTP {(int)response.StatusCode}: {text}";
    }

    [Test]
    public async Task A_wildcard_repeated_to_fill_the_body_costs_what_one_wildcard_costs()
    {
        // As many entries as a request body of the default limit holds in this protocol.
        var classes = Enumerable.Repeat("*", Dialect == RpcDialect.XmlRpc ? 15_000 : 70_000).ToArray();
        var once = await Client.FromAsync(["*"], "", 0);

        var before = GC.GetTotalAllocatedBytes(precise: true);
        var repeated = await Client.FromAsync(classes, "", 0);
        var fromCost = GC.GetTotalAllocatedBytes(precise: true) - before;

        using var registered = await Daemon.LoginAsync(Dialect);
        before = GC.GetTotalAllocatedBytes(precise: true);
        await registered.InvokeAsync("event.register", (object)classes);
        var registerCost = GC.GetTotalAllocatedBytes(precise: true) - before;
        var vm = await Client.CreateVmAsync("seen by a repeated wildcard");
        var next = (IReadOnlyList<object?>)(await registered.InvokeAsync("event.next"))!;

        TestContext.Out.WriteLine($"event.from allocated {fromCost / 1048576.0:0.0} MiB, event.register {registerCost / 1048576.0:0.0} MiB");
        Assert.Multiple(() =>
        {
            Assert.That(repeated.Events.Select(e => (e["class"], e["ref"])), Is.EquivalentTo(once.Events.Select(e => (e["class"], e["ref"]))));
            Assert.That(repeated.Counts.Keys, Is.EquivalentTo(once.Counts.Keys));
            Assert.That(next.Cast<IReadOnlyDictionary<string, object?>>().Select(e => e["ref"]), Does.Contain(vm));
            Assert.That(fromCost, Is.LessThan(32L << 20), "event.from allocates no more than reading the request and answering");
            Assert.That(registerCost, Is.LessThan(32L << 20), "event.register allocates no more than reading the request");
        });
    }
}

/// <summary>What a blocked event.from holds on to while it waits and after it ends.</summary>
public class EventWaiterTests
{
    private const int Waiters = 200;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Test]
    public async Task Blocked_callers_hold_one_timer_each_and_none_once_they_return_or_disconnect()
    {
        var time = new CountingTimeProvider();
        await using var daemon = await TestDaemon.StartAsync(time: time);
        using var http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = Timeout.InfiniteTimeSpan };
        using var setup = await daemon.LoginAsync(RpcDialect.JsonRpcV2);
        var pool = ((IReadOnlyList<object?>)(await setup.InvokeAsync("pool.get_all"))!)[0];
        var vm = await setup.CreateVmAsync("written while others wait");
        var token = (await setup.FromAsync(["pool"], "", 0)).Token;
        var clients = new List<XenApiClient>();
        for (var i = 0; i < Waiters; i++)
        {
            var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", TestDaemon.Password);
            clients.Add(client);
        }
        var hub = daemon.Service<Xapi.Server.Events.EventHub>();
        // A first round of concurrent waits, so that connections and the server's buffer pools are
        // as large as this many callers make them before memory is measured.
        var warmUp = clients.Select(c => c.FromAsync(["pool"], token, 60)).ToList();
        await UntilAsync(() => hub.WaiterCount == Waiters);
        await setup.InvokeAsync("event.inject", "pool", pool);
        token = (await Task.WhenAll(warmUp).WaitAsync(Patience))[0].Token;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        GC.Collect();
        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);
        var baseline = time.LiveTimers;

        // 24-hour waits, woken by 50 writes to a class they do not watch, then ended by one they do.
        var waiting = clients.Select(c => c.CallAsync("event.from", [c.Session, new[] { "pool" }, token, 86400.0])).ToList();
        await UntilAsync(() => hub.WaiterCount == Waiters);
        for (var i = 0; i < 50; i++)
        {
            await setup.InvokeAsync("VM.set_name_description", vm, $"write {i}");
        }
        var whileWaiting = time.LiveTimers - baseline;
        await setup.InvokeAsync("event.inject", "pool", pool);
        await Task.WhenAll(waiting).WaitAsync(Patience);
        token = (await setup.FromAsync(["pool"], token, 0)).Token;
        await UntilAsync(() => time.LiveTimers <= baseline);
        var afterReturning = time.LiveTimers - baseline;
        var waitersAfterReturning = hub.WaiterCount;
        GC.Collect();
        var memoryAfterReturning = GC.GetTotalMemory(forceFullCollection: true);
        var returned = watch.Elapsed;

        // 24-hour waits whose clients go away.
        using var disconnect = new CancellationTokenSource();
        var abandoned = clients.Select(c => c.CallAsync("event.from", [c.Session, new[] { "pool" }, token, 86400.0], disconnect.Token)).ToList();
        await UntilAsync(() => hub.WaiterCount == Waiters);
        await disconnect.CancelAsync();
        await Task.WhenAll(abandoned.Select(a => a.ContinueWith(_ => { }, TaskScheduler.Default))).WaitAsync(Patience);
        await UntilAsync(() => time.LiveTimers <= baseline);
        var afterDisconnecting = time.LiveTimers - baseline;
        await UntilAsync(() => hub.WaiterCount == 0);
        var waitersAfterDisconnecting = hub.WaiterCount;

        GC.Collect();
        var memoryAfter = GC.GetTotalMemory(forceFullCollection: true);
        TestContext.Out.WriteLine($"timers beyond the daemon's own: {whileWaiting} while {Waiters} wait through 50 writes, {afterReturning} after they return " +
            $"({returned.TotalSeconds:0.0} s), {afterDisconnecting} after {Waiters} more disconnect ({watch.Elapsed.TotalSeconds:0.0} s); " +
            $"managed heap {memoryBefore / 1048576.0:0.0} → {memoryAfterReturning / 1048576.0:0.0} → {memoryAfter / 1048576.0:0.0} MiB");
        Assert.Multiple(() =>
        {
            Assert.That(whileWaiting, Is.LessThanOrEqualTo(Waiters), "one timer per waiting call, however many writes wake the daemon");
            Assert.That(afterReturning, Is.LessThanOrEqualTo(0), "no timer outlives its call");
            Assert.That(afterDisconnecting, Is.LessThanOrEqualTo(0), "no timer outlives a disconnected call");
            Assert.That(waitersAfterReturning, Is.Zero, "no waiter outlives its call");
            Assert.That(waitersAfterDisconnecting, Is.Zero, "no waiter outlives a disconnected call");
            Assert.That(memoryAfterReturning - memoryBefore, Is.LessThan(6L << 20), "nothing is left behind by calls that returned");
            Assert.That(memoryAfter - memoryBefore, Is.LessThan(8L << 20), "nothing is left behind by calls that were abandoned");
        });
        clients.ForEach(c => c.Dispose());
    }

    // Polls a counter the daemon cannot signal; bounded, so a regression fails rather than hangs.
    private static async Task UntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }
    }
}

/// <summary>The system clock, counting the timers that are alive (created and not yet disposed).</summary>
internal sealed class CountingTimeProvider : TimeProvider
{
    private long _live;

    public long LiveTimers => Interlocked.Read(ref _live);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        Interlocked.Increment(ref _live);
        return new Counted(System.CreateTimer(callback, state, dueTime, period), this);
    }

    private sealed class Counted(ITimer inner, CountingTimeProvider owner) : ITimer
    {
        private int _disposed;

        public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Decrement(ref owner._live);
            }
            inner.Dispose();
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
