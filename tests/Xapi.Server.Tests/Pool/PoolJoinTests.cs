using Xapi.Database;
using Xapi.Database.Replication;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// Fresh daemons joined into one pool with <c>pool.join</c>: each host's view of the pool
/// database, the errors a join gives, and what a client that logs in to a member is told.
/// </summary>
public class PoolJoinTests
{
    private static string MasterAddress => TestPool.AddressOf(0).ToString();

    private static async Task JoinAsync(TestDaemon joiner, string masterAddress, string password = TestDaemon.Password, string message = "pool.join")
    {
        using var client = await joiner.LoginAsync();
        await client.InvokeAsync(message, masterAddress, "root", password);
    }

    /// <summary>Every row of every class, as its encoded values: two hosts agree when these are equal.</summary>
    private static Dictionary<(string, string), string> View(DbSnapshot snapshot) =>
        ApiSchema.Classes.SelectMany(c => snapshot.All(c).Select(r => ((c.Name, r.Ref), Convert.ToBase64String(ReplicationCodec.RowBytes(r.Values)))))
            .ToDictionary(p => p.Item1, p => p.Item2);

    /// <summary>Waits (on the member's own commits, not a clock) until its copy is the master's.</summary>
    internal static async Task ConvergedAsync(TestDaemon master, TestDaemon member)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            var next = member.Database.WhenVisibleAsync(member.Database.Snapshot.Generation + 1, limit.Token);
            var expected = View(master.Database.Snapshot);
            var seen = View(member.Database.Snapshot);
            if (expected.Count == seen.Count && expected.All(e => seen.TryGetValue(e.Key, out var v) && v == e.Value))
            {
                return;
            }
            try
            {
                await next;
            }
            catch (OperationCanceledException)
            {
                var missing = expected.Keys.Except(seen.Keys).Take(5);
                var different = expected.Where(e => seen.TryGetValue(e.Key, out var v) && v != e.Value).Select(e => e.Key).Take(5);
                var extra = seen.Keys.Except(expected.Keys).Take(5);
                Assert.Fail($"the member's view never became the master's: missing {string.Join(", ", missing)}; different {string.Join(", ", different)}; extra {string.Join(", ", extra)}");
            }
        }
    }

    [Test]
    public async Task Two_fresh_hosts_join_a_third_and_every_host_sees_one_pool_of_three()
    {
        await using var pool = await TestPool.StartAsync(3);
        var (master, first, second) = (pool.Hosts[0], pool.Hosts[1], pool.Hosts[2]);
        var joinerHosts = new[] { first, second }.Select(d => d.Database.Snapshot.All<HostRecord>().Single().Uuid).ToList();
        var poolUuid = master.Database.Snapshot.All<PoolRecord>().Single().Uuid;

        await JoinAsync(first, MasterAddress);
        await JoinAsync(second, MasterAddress);

        using var client = await master.LoginAsync(RpcDialect.JsonRpcV2);
        var hosts = (IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!;
        var uuids = new List<string>();
        foreach (var host in hosts)
        {
            uuids.Add((string)(await client.InvokeAsync("host.get_uuid", host))!);
        }
        Assert.That(uuids, Is.SupersetOf(joinerHosts).And.Count.EqualTo(3));
        foreach (var member in new[] { first, second })
        {
            await ConvergedAsync(master, member);
            var snapshot = member.Database.Snapshot;
            Assert.Multiple(() =>
            {
                Assert.That(snapshot.All<PoolRecord>().Select(p => p.Uuid), Is.EqualTo(new[] { poolUuid }), "one pool, the master's");
                Assert.That(snapshot.All<HostRecord>().Count(), Is.EqualTo(3));
                // Each host brought its control domain, its metrics and its local SR with its PBD.
                Assert.That(snapshot.All<VMRecord>().Count(v => v.IsControlDomain), Is.EqualTo(3));
                Assert.That(snapshot.All<HostRecord>().All(h => snapshot.TryGet(h.Metrics, out HostMetricsRecord _)), Is.True);
                Assert.That(snapshot.All<PBDRecord>().Select(p => p.Host).Distinct().Count(), Is.EqualTo(3));
                // The pool's default templates only: a joiner's own are left behind.
                Assert.That(snapshot.All<VMRecord>().Count(v => v.IsDefaultTemplate),
                    Is.EqualTo(master.Database.Snapshot.All<VMRecord>().Count(v => v.IsDefaultTemplate)));
            });
        }
    }

    [Test]
    public async Task Writes_at_the_master_and_on_a_member_reach_every_host()
    {
        await using var pool = await TestPool.StartAsync(3);
        var (master, first, second) = (pool.Hosts[0], pool.Hosts[1], pool.Hosts[2]);
        await JoinAsync(first, MasterAddress);
        await JoinAsync(second, MasterAddress);

        using var client = await master.LoginAsync();
        var poolRef = ((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0];
        await client.InvokeAsync("pool.set_name_label", poolRef, "renamed at the master");
        // What a member's own code writes (its host's record, here) goes through the master.
        var firstHost = new HostRef(first.Service<Xapi.Server.Hosting.FirstBoot>().HostRef);
        first.Database.Write(tx => tx.Update(firstHost, h => h.NameDescription = "written on a member"));

        Assert.That(await client.InvokeAsync("host.get_name_description", firstHost.Value), Is.EqualTo("written on a member"));
        await ConvergedAsync(master, first);
        await ConvergedAsync(master, second);
        Assert.That(second.Database.Snapshot.All<PoolRecord>().Single().NameLabel, Is.EqualTo("renamed at the master"));
    }

    [Test]
    public async Task A_client_logging_in_to_a_member_is_sent_to_the_master([ValueSource(typeof(Dialects), nameof(Dialects.All))] RpcDialect dialect)
    {
        await using var pool = await TestPool.StartAsync(2);
        await JoinAsync(pool.Hosts[1], MasterAddress);

        using var client = pool.Hosts[1].Client(dialect);
        await XenApiAssert.FailsAsync(() => client.LoginAsync("root", "not even checked"), "HOST_IS_SLAVE", MasterAddress);
    }

    [Test]
    public async Task A_session_of_the_pool_used_at_a_member_is_sent_to_the_master()
    {
        await using var pool = await TestPool.StartAsync(2);
        await JoinAsync(pool.Hosts[1], MasterAddress);
        using var atMaster = await pool.Hosts[0].LoginAsync();
        await ConvergedAsync(pool.Hosts[0], pool.Hosts[1]);

        using var atMember = pool.Hosts[1].Client();
        await XenApiAssert.FailsAsync(() => atMember.CallAsync("host.get_all", [atMaster.Session]), "HOST_IS_SLAVE", MasterAddress);
    }

    [Test]
    public async Task A_restarted_member_takes_the_pool_database_again_and_catches_up()
    {
        await using var pool = await TestPool.StartAsync(2);
        var master = pool.Hosts[0];
        await JoinAsync(pool.Hosts[1], MasterAddress);
        var member = await pool.RestartAsync(1);
        using var client = await master.LoginAsync();
        var poolRef = ((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0];

        await client.InvokeAsync("pool.set_name_description", poolRef, "after the member's restart");

        await ConvergedAsync(master, member);
        Assert.That(member.Database.FollowsMaster, Is.True);
    }

    [Test]
    public async Task Join_force_joins_as_join_does()
    {
        await using var pool = await TestPool.StartAsync(2);

        await JoinAsync(pool.Hosts[1], MasterAddress, message: "pool.join_force");

        await ConvergedAsync(pool.Hosts[0], pool.Hosts[1]);
        Assert.That(pool.Hosts[0].Database.Snapshot.All<HostRecord>().Count(), Is.EqualTo(2));
    }

    [Test]
    public async Task A_host_cannot_join_itself()
    {
        await using var pool = await TestPool.StartAsync(1);

        await XenApiAssert.FailsAsync(() => JoinAsync(pool.Hosts[0], MasterAddress), "OPERATION_NOT_ALLOWED", "Host cannot become slave of itself");
    }

    [Test]
    public async Task A_wrong_password_for_the_master_fails_as_the_master_says_and_changes_nothing()
    {
        await using var pool = await TestPool.StartAsync(2);

        await XenApiAssert.FailsAsync(() => JoinAsync(pool.Hosts[1], MasterAddress, password: "wrong"), "SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure");

        Assert.Multiple(() =>
        {
            Assert.That(pool.Hosts[0].Database.Snapshot.All<HostRecord>().Count(), Is.EqualTo(1));
            Assert.That(pool.Hosts[1].Database.FollowsMaster, Is.False);
        });
    }

    [Test]
    public async Task Nobody_at_the_master_address_is_a_connection_failure()
    {
        await using var pool = await TestPool.StartAsync(1);

        await XenApiAssert.FailsAsync(() => JoinAsync(pool.Hosts[0], TestPool.AddressOf(5).ToString()), "JOINING_HOST_CONNECTION_FAILED");
    }

    [Test]
    public async Task A_host_with_a_running_VM_cannot_join()
    {
        await using var pool = await TestPool.StartAsync(2);
        await pool.Hosts[1].InsertAsync(VMRef.Class, new() { ["name_label"] = "busy", ["power_state"] = VmPowerState.Running.ToWire() });

        await XenApiAssert.FailsAsync(() => JoinAsync(pool.Hosts[1], MasterAddress), "JOINING_HOST_CANNOT_HAVE_RUNNING_VMS");
        Assert.That(pool.Hosts[0].Database.Snapshot.All<HostRecord>().Count(), Is.EqualTo(1));
    }

    [Test]
    public async Task A_host_with_a_shared_SR_cannot_join()
    {
        await using var pool = await TestPool.StartAsync(2);
        await pool.Hosts[1].InsertAsync(SRRef.Class, new() { ["name_label"] = "shared", ["shared"] = true });

        await XenApiAssert.FailsAsync(() => JoinAsync(pool.Hosts[1], MasterAddress), "JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS");
    }

    [Test]
    public async Task The_pool_database_is_refused_without_the_pool_secret()
    {
        await using var pool = await TestPool.StartAsync(1);
        using var http = new HttpClient();

        using var response = await http.GetAsync(new Uri(pool.Hosts[0].Uri, "/pool/db/changes?epoch=&since=0"));
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(pool.Hosts[0].Uri, "/pool/db/changes?epoch=&since=0"));
        request.Headers.Add("Cookie", "pool_secret=guessed");
        using var guessed = await http.SendAsync(request);

        Assert.That((response.StatusCode, guessed.StatusCode), Is.EqualTo((System.Net.HttpStatusCode.Forbidden, System.Net.HttpStatusCode.Forbidden)));
    }
}
