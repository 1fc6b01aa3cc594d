using System.Text.RegularExpressions;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

internal sealed record EventBatch(IReadOnlyList<IReadOnlyDictionary<string, object?>> Events, IReadOnlyDictionary<string, object?> Counts, string Token);

internal static class EventClient
{
    public static async Task<EventBatch> FromAsync(this XenApiClient client, string[] classes, string token, double timeout)
    {
        var batch = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("event.from", classes, token, timeout))!;
        return new EventBatch(
            ((IReadOnlyList<object?>)batch["events"]!).Cast<IReadOnlyDictionary<string, object?>>().ToList(),
            (IReadOnlyDictionary<string, object?>)batch["valid_ref_counts"]!,
            (string)batch["token"]!);
    }

    public static Task<string> CreateVmAsync(this XenApiClient client, string name) => CreateFromDefaultsAsync(client, name);

    private static async Task<string> CreateFromDefaultsAsync(XenApiClient client, string name)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        return (string)(await client.InvokeAsync("VM.create", record))!;
    }
}

[TestFixtureSource(typeof(RoundTripTests), nameof(RoundTripTests.Protocols))]
public class EventTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    [Test]
    public async Task The_empty_token_returns_an_add_for_every_object_with_counts()
    {
        var batch = await Client.FromAsync(["*"], "", 0);
        var vms = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_all"))!;
        Assert.Multiple(() =>
        {
            Assert.That(batch.Events.Select(e => e["operation"]), Is.All.EqualTo("add"));
            Assert.That(batch.Events.Where(e => (string)e["class"]! == "vm").Select(e => e["ref"]), Is.SupersetOf(vms));
            Assert.That(batch.Events.Count(e => (string)e["class"]! == "pool"), Is.EqualTo(1), "the pool is in the first batch");
            Assert.That(XType.Parse("int").Coerce(batch.Counts["vm"], "vm"), Is.EqualTo((long)vms.Count));
            Assert.That(batch.Counts.Keys, Does.Contain("host").And.Contain("task"));
            Assert.That(batch.Token, Does.Match(@"^\d{20},\d{20}$"));
            Assert.That(batch.Events.All(e => e.ContainsKey("snapshot") && e["id"] is string), Is.True);
        });
    }

    [Test]
    public async Task Later_tokens_return_changes_since_in_order_and_tokens_sort_as_strings()
    {
        var start = (await Client.FromAsync(["vm"], "", 0)).Token;
        var vm = await Client.CreateVmAsync("ordered");
        await Client.InvokeAsync("VM.set_name_label", vm, "ordered-2");
        var batch = await Client.FromAsync(["VM"], start, 5);
        var mine = batch.Events.Where(e => (string)e["ref"]! == vm).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(mine, Has.Count.EqualTo(1), "one event per object per batch, reflecting its latest state");
            Assert.That(mine[0]["operation"], Is.EqualTo("add"));
            Assert.That(((IReadOnlyDictionary<string, object?>)mine[0]["snapshot"]!)["name_label"], Is.EqualTo("ordered-2"));
            Assert.That(string.CompareOrdinal(batch.Token, start), Is.GreaterThan(0));
        });
        await Client.InvokeAsync("VM.set_name_label", vm, "ordered-3");
        var next = await Client.FromAsync(["VM"], batch.Token, 5);
        Assert.Multiple(() =>
        {
            Assert.That(next.Events.Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { ((object?)vm, (object?)"mod") }));
            Assert.That(string.CompareOrdinal(next.Token, batch.Token), Is.GreaterThan(0));
        });
    }

    [Test]
    public async Task A_timeout_with_no_events_returns_an_empty_batch_and_a_token_not_older()
    {
        var token = (await Client.FromAsync(["sr"], "", 0)).Token;
        var batch = await Client.FromAsync(["sr"], token, 0.2);
        Assert.Multiple(() =>
        {
            Assert.That(batch.Events, Is.Empty);
            Assert.That(string.CompareOrdinal(batch.Token, token), Is.GreaterThanOrEqualTo(0));
        });
    }

    [Test]
    public async Task A_blocked_call_wakes_on_a_matching_write_only()
    {
        var token = (await Client.FromAsync(["VM"], "", 0)).Token;
        var vm = await Client.CreateVmAsync("waker");
        token = (await Client.FromAsync(["VM"], token, 0)).Token;
        var network = ((IReadOnlyList<object?>)(await Client.InvokeAsync("network.get_all"))!)[0];

        using var writer = await Daemon.LoginAsync(Dialect);
        var waiting = Client.FromAsync(["VM"], token, 30);
        await writer.InvokeAsync("network.set_name_description", network, "not a VM");
        var early = await Task.WhenAny(waiting, Task.Delay(300));
        Assert.That(early, Is.Not.SameAs(waiting), "a write to another class must not wake a VM subscriber");

        var watch = System.Diagnostics.Stopwatch.StartNew();
        await writer.InvokeAsync("VM.set_name_description", vm, "wake up");
        var batch = await waiting;
        Assert.Multiple(() =>
        {
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)));
            Assert.That(batch.Events.Select(e => e["ref"]), Is.EqualTo(new[] { vm }));
        });
    }

    [Test]
    public async Task Class_ref_subscriptions_see_only_that_object()
    {
        var first = await Client.CreateVmAsync("watched");
        var second = await Client.CreateVmAsync("ignored");
        var token = (await Client.FromAsync([$"VM/{first}"], "", 0)).Token;
        await Client.InvokeAsync("VM.set_name_description", second, "x");
        await Client.InvokeAsync("VM.set_name_description", first, "y");
        var batch = await Client.FromAsync([$"vm/{first}"], token, 5);
        Assert.That(batch.Events.Select(e => e["ref"]), Is.EqualTo(new[] { first }));
    }

    [Test]
    public async Task Deletes_are_del_events_without_a_snapshot()
    {
        var vm = await Client.CreateVmAsync("doomed");
        var token = (await Client.FromAsync(["VM"], "", 0)).Token;
        await Client.InvokeAsync("VM.destroy", vm);
        var batch = await Client.FromAsync(["VM"], token, 5);
        var del = batch.Events.Single(e => (string)e["ref"]! == vm);
        Assert.Multiple(() =>
        {
            Assert.That(del["operation"], Is.EqualTo("del"));
            Assert.That(del.ContainsKey("snapshot"), Is.False);
        });
    }

    [Test]
    public async Task Inject_makes_an_object_appear_modified()
    {
        var pool = ((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0];
        var before = (await Client.FromAsync(["pool"], "", 0)).Token;
        var injected = (string)(await Client.InvokeAsync("event.inject", "pool", pool))!;
        var batch = await Client.FromAsync(["pool"], before, 5);
        Assert.Multiple(() =>
        {
            Assert.That(injected, Does.Match(@"^\d{20},\d{20}$"));
            Assert.That(batch.Events.Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { (pool, (object?)"mod") }));
        });
    }

    [Test]
    public async Task The_current_id_advances_with_every_write()
    {
        var before = (long)XType.Parse("int").Coerce(await Client.InvokeAsync("event.get_current_id"), "id")!;
        await Client.CreateVmAsync("counted");
        var after = (long)XType.Parse("int").Coerce(await Client.InvokeAsync("event.get_current_id"), "id")!;
        var token = (await Client.FromAsync(["VM"], "", 0)).Token;
        Assert.Multiple(() =>
        {
            Assert.That(after, Is.GreaterThan(before));
            Assert.That(long.Parse(token.Split(',')[0]), Is.GreaterThanOrEqualTo(after), "tokens count the same generations");
        });
    }

    [Test]
    public async Task Bad_tokens_and_subscriptions_are_parse_failures()
    {
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("event.from", new[] { "VM" }, "not-a-token", 0.0), "EVENT_FROM_TOKEN_PARSE_FAILURE", "not-a-token");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("event.from", new[] { "no_such_class" }, "", 0.0), "EVENT_SUBSCRIPTION_PARSE_FAILURE", "no_such_class");
    }

    [Test]
    public async Task Logging_out_while_waiting_ends_the_wait_with_session_invalid()
    {
        using var waiter = await Daemon.LoginAsync(Dialect);
        var token = (await waiter.FromAsync(["sr"], "", 0)).Token;
        var waiting = waiter.FromAsync(["sr"], token, 30);
        using var other = Daemon.Client(Dialect);
        await other.CallAsync("session.logout", [waiter.Session]);
        var e = await XenApiAssert.FailsAsync(() => waiting, "SESSION_INVALID");
        Assert.That(e.Parameters, Is.EqualTo(new[] { waiter.Session }));
    }

    [Test]
    public async Task Message_alerts_are_objects_with_events()
    {
        var vm = ((IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_all"))!)[0];
        var uuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
        var token = (await Client.FromAsync(["message"], "", 0)).Token;
        var since = DateTime.UtcNow.AddMinutes(-1);
        var message = (string)(await Client.InvokeAsync("message.create", "VM_STARTED", 3L, "VM", uuid, "hello"))!;
        var batch = await Client.FromAsync(["message"], token, 5);
        var recent = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("message.get_since", since))!;
        var record = (IReadOnlyDictionary<string, object?>)recent[message]!;
        Assert.Multiple(async () =>
        {
            Assert.That(batch.Events.Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { ((object?)message, (object?)"add") }));
            Assert.That(record["name"], Is.EqualTo("VM_STARTED"));
            Assert.That(record["obj_uuid"], Is.EqualTo(uuid));
            Assert.That(record["cls"], Is.EqualTo("VM"));
            var all = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("message.get_all_records"))!;
            Assert.That(all.Keys, Does.Contain(message));
        });
        await Client.InvokeAsync("message.destroy", message);
        var after = await Client.FromAsync(["message"], batch.Token, 5);
        Assert.That(after.Events.Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { ((object?)message, (object?)"del") }));
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("message.create", "X", 1L, "VM", "no-such-uuid", ""), "UUID_INVALID", "VM", "no-such-uuid");
    }
}

public class EventLimitTests
{
    [Test]
    public async Task Event_next_reports_events_lost_when_a_client_falls_behind()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.EventQueueLimit = 5);
        using var client = await daemon.LoginAsync();
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("event.next"), "SESSION_NOT_REGISTERED");
        await client.InvokeAsync("event.register", (object)new[] { "vm" });
        var vm = await client.CreateVmAsync("one");
        var first = (IReadOnlyList<object?>)(await client.InvokeAsync("event.next"))!;
        Assert.That(first.Cast<IReadOnlyDictionary<string, object?>>().Select(e => e["ref"]), Is.EqualTo(new[] { vm }));

        for (var i = 0; i < 10; i++)
        {
            await client.CreateVmAsync($"flood-{i}");
        }
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("event.next"), "EVENTS_LOST");

        await client.InvokeAsync("VM.set_name_label", vm, "after the loss");
        var resumed = (IReadOnlyList<object?>)(await client.InvokeAsync("event.next"))!;
        Assert.That(resumed.Cast<IReadOnlyDictionary<string, object?>>().Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { ((object?)vm, (object?)"mod") }));

        await client.InvokeAsync("event.unregister", (object)new[] { "vm" });
        await client.InvokeAsync("event.register", (object)new[] { "sr" });
        var waiting = client.InvokeAsync("event.next");
        await client.InvokeAsync("VM.set_name_label", vm, "unwatched now");
        Assert.That(await Task.WhenAny(waiting, Task.Delay(300)), Is.Not.SameAs(waiting), "unregistered classes no longer wake event.next");
        await client.LogoutAsync();
        Assert.That(async () => await waiting, Throws.TypeOf<Xapi.Model.XenApiException>());
    }

    [Test]
    public async Task A_token_older_than_the_tombstones_still_gets_a_consistent_answer()
    {
        // Each VM.destroy deletes two rows (the VM and its VM_metrics): 4 tombstones remember two VMs.
        await using var daemon = await TestDaemon.StartAsync(o => o.TombstoneLimit = 4);
        using var client = await daemon.LoginAsync();
        var vms = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            vms.Add(await client.CreateVmAsync($"gone-{i}"));
        }
        var token = (await client.FromAsync(["VM"], "", 0)).Token;
        foreach (var vm in vms)
        {
            await client.InvokeAsync("VM.destroy", vm);
        }
        var batch = await client.FromAsync(["VM"], token, 5);
        var remaining = (IReadOnlyList<object?>)(await client.InvokeAsync("VM.get_all"))!;
        Assert.Multiple(() =>
        {
            Assert.That(batch.Events.Select(e => e["operation"]), Is.All.EqualTo("del"));
            Assert.That(batch.Events.Select(e => e["ref"]), Is.EqualTo(vms.TakeLast(2)), "only the remembered deletes");
            Assert.That(XType.Parse("int").Coerce(batch.Counts["vm"], "vm"), Is.EqualTo((long)remaining.Count),
                "valid_ref_counts tell the client its cache is off and must be rebuilt");
        });
    }
}
