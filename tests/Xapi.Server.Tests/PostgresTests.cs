using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

[Category("Postgres")]
[NonParallelizable]
public class PostgresTests
{
    private PostgresCluster _cluster = null!;

    [OneTimeSetUp]
    public async Task StartPostgresAsync() => _cluster = await PostgresCluster.StartAsync();

    [OneTimeTearDown]
    public async Task StopPostgresAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }

    private static Task<TestDaemon> StartAsync(string connectionString, Action<ServerOptions>? configure = null) =>
        TestDaemon.StartAsync(o =>
        {
            o.Database = "postgres";
            o.Postgres = connectionString;
            configure?.Invoke(o);
        });

    [Test]
    public async Task The_pool_survives_a_restart_with_its_generations()
    {
        var database = await _cluster.CreateDatabaseAsync();
        string vm;
        string token;
        string pool;
        await using (var first = await StartAsync(database))
        {
            using var client = await first.LoginAsync();
            pool = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!)[0]!;
            vm = await client.CreateVmAsync("kept in postgres");
            await client.InvokeAsync("VM.add_to_other_config", vm, "k", "v");
            var doomed = await client.CreateVmAsync("deleted");
            await client.InvokeAsync("VM.destroy", doomed);
            token = (await client.FromAsync(["VM"], "", 0)).Token;
            await client.InvokeAsync("VM.set_name_label", vm, "renamed in postgres");
        }
        await using var second = await StartAsync(database);
        using var again = await second.LoginAsync();
        var events = await again.FromAsync(["VM"], token, 5);
        Assert.Multiple(async () =>
        {
            Assert.That(await again.InvokeAsync("pool.get_all"), Is.EqualTo(new[] { pool }), "first boot does not run twice");
            Assert.That(await again.InvokeAsync("VM.get_name_label", vm), Is.EqualTo("renamed in postgres"));
            Assert.That((IReadOnlyDictionary<string, object?>)(await again.InvokeAsync("VM.get_other_config", vm))!, Does.ContainKey("k"));
            Assert.That(events.Events.Select(e => (e["ref"], e["operation"])), Is.EqualTo(new[] { ((object?)vm, (object?)"mod") }), "a token from before the restart still works");
        });
    }

    [Test]
    public async Task A_second_daemon_waits_while_the_first_is_master_and_takes_over()
    {
        var database = await _cluster.CreateDatabaseAsync();
        var first = await StartAsync(database);
        string vm;
        using (var client = await first.LoginAsync())
        {
            vm = await client.CreateVmAsync("from the first master");
        }
        var second = Task.Run(() => StartAsync(database));
        var early = await Task.WhenAny(second, Task.Delay(TimeSpan.FromSeconds(2)));
        Assert.That(early, Is.Not.SameAs(second), "the second daemon must not serve while the first holds the pool");

        await first.DisposeAsync();
        await using var takeover = await second.WaitAsync(TimeSpan.FromSeconds(30));
        using var again = await takeover.LoginAsync();
        Assert.That(await again.InvokeAsync("VM.get_name_label", vm), Is.EqualTo("from the first master"));
    }

    [TestCase("UPDATE \"VM\" SET \"other_config\" = '\\x08ff' WHERE _ref = @vm", "other_config")]
    [TestCase("ALTER TABLE \"VM\" ALTER COLUMN \"name_label\" TYPE integer USING length(\"name_label\")", "name_label")]
    [TestCase("UPDATE xapi_meta SET value = 'soon' WHERE key = 'generation'", "generation")]
    public async Task A_malformed_row_or_a_column_of_the_wrong_type_stops_the_start_with_the_table_row_and_column(string damage, string named)
    {
        var database = await _cluster.CreateDatabaseAsync();
        string vm;
        await using (var first = await StartAsync(database))
        {
            using var client = await first.LoginAsync();
            vm = await client.CreateVmAsync("to be damaged");
        }
        await using (var connection = new Npgsql.NpgsqlConnection(database + ";Pooling=false"))
        {
            await connection.OpenAsync();
            await using var command = new Npgsql.NpgsqlCommand(damage, connection);
            command.Parameters.AddWithValue("vm", vm);
            await command.ExecuteNonQueryAsync();
        }

        var e = await Assert.ThrowsAsync<Xapi.Database.Persistence.DatabaseFormatException>(() => StartAsync(database));
        Assert.That(e!.Message, Does.Contain(named).And.Contain("refusing to start").And.Not.Contain("\n"));
    }

    [Test]
    [Category("Slow")]
    [Explicit("stops and restarts PostgreSQL: run by scripts/test.sh, or with --filter TestCategory=Slow")]
    public async Task An_outage_gives_clear_errors_and_loses_nothing_acknowledged()
    {
        var database = await _cluster.CreateDatabaseAsync();
        await using var daemon = await StartAsync(database, o => o.DurabilityTimeout = TimeSpan.FromSeconds(1));
        using var client = await daemon.LoginAsync();
        var vm = await client.CreateVmAsync("through the outage");
        var acknowledged = new List<string>();
        var errors = new List<XenApiException>();

        async Task WriteAsync(int i)
        {
            try
            {
                await client.InvokeAsync("VM.add_to_other_config", vm, $"k{i}", "v");
                acknowledged.Add($"k{i}");
            }
            catch (XenApiException e)
            {
                errors.Add(e);
            }
        }

        for (var i = 0; i < 5; i++)
        {
            await WriteAsync(i);
        }
        await _cluster.StopServerAsync();
        var outage = System.Diagnostics.Stopwatch.StartNew();
        var during = 100;
        while (outage.Elapsed < TimeSpan.FromSeconds(10))
        {
            await WriteAsync(during++);
        }
        await _cluster.StartServerAsync();
        // Recovery takes the writer's next retry; then writes succeed as before.
        var after = 1000;
        var recovery = System.Diagnostics.Stopwatch.StartNew();
        while (!acknowledged.Any(k => k.StartsWith("k1", StringComparison.Ordinal) && k.Length == 5) && recovery.Elapsed < TimeSpan.FromSeconds(30))
        {
            await WriteAsync(after++);
        }
        var failuresBefore = errors.Count;
        for (var i = 0; i < 5; i++)
        {
            await WriteAsync(after++);
        }
        Assert.Multiple(() =>
        {
            Assert.That(errors, Is.Not.Empty, "callers are told while the database is away");
            Assert.That(errors.Select(e => e.Code), Is.All.EqualTo("INTERNAL_ERROR"));
            Assert.That(errors[0].Parameters[0], Does.Contain("pool database is unreachable"));
            Assert.That(errors, Has.Count.EqualTo(failuresBefore), "once it is back, writes succeed again");
            Assert.That(acknowledged, Does.Contain($"k{after - 1}"));
        });

        await daemon.DisposeAsync();
        await using var restarted = await StartAsync(database);
        using var again = await restarted.LoginAsync();
        var stored = (IReadOnlyDictionary<string, object?>)(await again.InvokeAsync("VM.get_other_config", vm))!;
        Assert.That(acknowledged.Where(k => !stored.ContainsKey(k)), Is.Empty, "every acknowledged write is in the database");
    }
}
