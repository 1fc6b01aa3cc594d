using Npgsql;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Pool;

/// <summary>
/// The database server is not a single point of failure: a pool of two daemons on a PostgreSQL
/// primary with a synchronous streaming replica, reached through Npgsql's multi-host connection
/// string (the primary as target). The primary is killed while a client writes, the replica is
/// promoted, the pool keeps serving once the master reconnects, and every write it acknowledged
/// is on the promoted server.
/// </summary>
public class PostgresReplicaFailoverTests
{
    [Test]
    public async Task The_primary_killed_under_writes_and_the_replica_promoted_loses_no_acknowledged_write()
    {
        await using var cluster = await PostgresCluster.StartAsync();
        var database = await cluster.CreateDatabaseAsync();
        await cluster.StartReplicaAsync();
        var multiHost = cluster.MultiHostConnectionString(database);
        await using var pool = await PoolKit.JoinedAsync(2, (_, options) =>
        {
            options.Database = "postgres";
            options.Postgres = multiHost;
        });
        using var client = await pool.Hosts[0].LoginAsync();
        var acknowledged = new List<string>();
        var failed = 0;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var twenty = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var afterPromotion = 0;
        var promoted = false;
        var writing = Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested && afterPromotion < 20; i++)
            {
                var name = $"write-{i:D5}";
                try
                {
                    await client.InvokeAsync("VM.create", VmRecord(name));
                }
                catch (XenApiException)
                {
                    // Not acknowledged: the daemon said why (the database was away).
                    failed++;
                    continue;
                }
                acknowledged.Add(name);
                if (acknowledged.Count == 20)
                {
                    twenty.SetResult();
                }
                if (Volatile.Read(ref promoted))
                {
                    afterPromotion++;
                }
            }
        });
        await twenty.Task.WaitAsync(stop.Token);

        await cluster.StopServerAsync();
        await cluster.PromoteReplicaAsync();
        Volatile.Write(ref promoted, true);
        await writing.WaitAsync(stop.Token);

        var stored = new HashSet<string>(StringComparer.Ordinal);
        await using (var connection = new NpgsqlConnection(cluster.ReplicaConnectionString(database)))
        {
            await connection.OpenAsync();
            await using var names = new NpgsqlCommand("SELECT \"name_label\" FROM \"VM\"", connection);
            await using var reader = await names.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                stored.Add(reader.GetString(0));
            }
        }
        TestContext.Out.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {acknowledged.Count} writes acknowledged ({afterPromotion} after the promotion), {failed} refused while the database was away");
        Assert.Multiple(() =>
        {
            Assert.That(afterPromotion, Is.EqualTo(20), "the pool serves writes after the reconnect");
            Assert.That(acknowledged.Where(name => !stored.Contains(name)), Is.Empty, "every acknowledged write is on the promoted server");
        });
        // The member follows the master that reconnected.
        var last = acknowledged[^1];
        using var member = pool.Hosts[1].Client();
        var session = await member.CallAsync("session.slave_local_login_with_password", ["root", TestDaemon.Password]);
        var token = "";
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (((IReadOnlyList<object?>)(await member.CallAsync("VM.get_by_name_label", [session, last]))!).Count == 0)
        {
            var batch = (IReadOnlyDictionary<string, object?>)(await member.CallAsync("event.from", [session, new object?[] { "VM" }, token, 5.0], limit.Token))!;
            token = (string)batch["token"]!;
        }
        TestContext.Out.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] the member has the last write");
    }

    private static Dictionary<string, object?> VmRecord(string name)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        return record;
    }
}
