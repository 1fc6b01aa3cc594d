using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Tests;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// Master failover without an HA storage repository: three daemon processes (127.0.0.2 master,
/// .3 and .4 members) on one PostgreSQL pool database. The master is SIGKILLed while a client
/// writes; a member takes the database's lock and becomes master, the other follows it, every
/// write the old master acknowledged is there, a VM running on a member keeps running, and the
/// old master, started again, is a member of the new one.
/// </summary>
public class PostgresFailoverTests
{
    private const string Password = "pg-failover";
    private static readonly string[] Addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

    private static Task<DaemonProcess> StartAsync(string dataDir, string address, int port, string database) =>
        DaemonProcess.StartAsync(dataDir, Password, "--listen", address, "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--database", "postgres", "--postgres", database, "--sim-guest-agent-delay", "0");

    private static XenApiClient ClientOf(string address, int port) => new(new Uri($"http://{address}:{port}/"));

    [Test]
    public async Task The_master_killed_while_a_client_writes_is_replaced_by_a_member_and_no_acknowledged_write_is_lost()
    {
        await using var cluster = await PostgresCluster.StartAsync();
        var database = await cluster.CreateDatabaseAsync();
        var port = TestPool.FreePortOnAll(3);
        var dirs = Addresses.Select(_ => Directory.CreateTempSubdirectory("xapi-pg-failover-").FullName).ToArray();
        var cleanups = dirs.Select(d => new DirectoryCleanup(d)).ToList();
        var daemons = new DaemonProcess?[3];
        try
        {
            daemons[0] = await StartAsync(dirs[0], Addresses[0], port, database);
            for (var i = 1; i < 3; i++)
            {
                daemons[i] = await StartAsync(dirs[i], Addresses[i], port, database);
                using var joining = ClientOf(Addresses[i], port);
                await joining.LoginAsync("root", Password);
                await joining.InvokeAsync("pool.join", Addresses[0], "root", Password);
            }
            using var master = ClientOf(Addresses[0], port);
            await master.LoginAsync("root", Password);
            var hosts = ((IReadOnlyDictionary<string, object?>)(await master.InvokeAsync("host.get_all_records"))!)
                .ToDictionary(h => (string)((IReadOnlyDictionary<string, object?>)h.Value!)["address"]!, h => h.Key);
            Assert.That(hosts.Keys, Is.EquivalentTo(Addresses));
            var vm = await VmAsync(master);
            await master.InvokeAsync("VM.start_on", vm, hosts[Addresses[1]], false, false);
            var pool = (string)((IReadOnlyList<object?>)(await master.InvokeAsync("pool.get_all"))!)[0]!;

            // A client writes one key at a time; what the master acknowledged is recorded.
            var acknowledged = new List<string>();
            var thirty = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var writing = Task.Run(async () =>
            {
                for (var i = 0; ; i++)
                {
                    var key = $"write-{i:D5}";
                    try
                    {
                        await master.InvokeAsync("pool.add_to_other_config", pool, key, "acknowledged");
                    }
                    catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or RpcFormatException)
                    {
                        return;
                    }
                    acknowledged.Add(key);
                    if (acknowledged.Count == 30)
                    {
                        thirty.SetResult();
                    }
                }
            });
            await thirty.Task.WaitAsync(TimeSpan.FromSeconds(60));
            daemons[0]!.Kill();
            var clock = Stopwatch.StartNew();
            await writing.WaitAsync(TimeSpan.FromSeconds(30));

            const string TookOver = "this host took the pool over";
            await await Task.WhenAny(daemons[1]!.WaitForLineAsync(TookOver, TimeSpan.FromSeconds(60)), daemons[2]!.WaitForLineAsync(TookOver, TimeSpan.FromSeconds(60)));
            var newMaster = daemons[1]!.Output.Any(l => l.Contains(TookOver, StringComparison.Ordinal)) ? 1 : 2;
            var other = 3 - newMaster;
            using var client = ClientOf(Addresses[newMaster], port);
            await client.LoginAsync("root", Password);
            var failover = clock.Elapsed;
            TestContext.Out.WriteLine($"master SIGKILLed after {acknowledged.Count} acknowledged writes; {Addresses[newMaster]} took over {failover.TotalSeconds:F2} s after the kill");

            var kept = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("pool.get_other_config", pool))!;
            await daemons[other]!.WaitForLineAsync($"Following the pool master {Addresses[newMaster]}", TimeSpan.FromSeconds(60));
            using (var atOther = ClientOf(Addresses[other], port))
            {
                await XenApiAssert.FailsAsync(() => atOther.LoginAsync("root", Password), "HOST_IS_SLAVE", Addresses[newMaster]);
            }
            Assert.Multiple(async () =>
            {
                Assert.That(failover, Is.LessThan(TimeSpan.FromSeconds(15)), "a member is master within the figure stated");
                Assert.That(acknowledged.Where(k => !kept.ContainsKey(k)), Is.Empty, "every acknowledged write is in the pool database");
                Assert.That(await client.InvokeAsync("pool.get_master", pool), Is.EqualTo(hosts[Addresses[newMaster]]));
                Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Running"), "the VM on the surviving member runs on");
                Assert.That(await client.InvokeAsync("VM.get_resident_on", vm), Is.EqualTo(hosts[Addresses[1]]));
            });

            // The pool goes on writing, and the old master, back, is a member of the new one.
            await client.InvokeAsync("pool.add_to_other_config", pool, "after-failover", "yes");
            daemons[0]!.Dispose();
            daemons[0] = await StartAsync(dirs[0], Addresses[0], port, database);
            using (var atOld = ClientOf(Addresses[0], port))
            {
                await XenApiAssert.FailsAsync(() => atOld.LoginAsync("root", Password), "HOST_IS_SLAVE", Addresses[newMaster]);
                var session = await atOld.CallAsync("session.slave_local_login_with_password", ["root", Password]);
                var copy = (IReadOnlyDictionary<string, object?>)(await atOld.CallAsync("pool.get_other_config", [session, pool]))!;
                Assert.That(copy, Does.ContainKey("after-failover"), "the old master's copy follows the new master");
            }
            await client.InvokeAsync("VM.hard_shutdown", vm);
            Assert.That(await client.InvokeAsync("VM.get_power_state", vm), Is.EqualTo("Halted"), "the VM on the member is still in the pool's hands");
        }
        finally
        {
            foreach (var daemon in daemons)
            {
                daemon?.Dispose();
            }
            cleanups.ForEach(c => c.Dispose());
        }
    }

    private static async Task<string> VmAsync(XenApiClient client)
    {
        const long MiB = 1L << 20;
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "on a member";
        record["memory_static_min"] = record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (256 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        return (string)(await client.InvokeAsync("VM.create", record))!;
    }
}
