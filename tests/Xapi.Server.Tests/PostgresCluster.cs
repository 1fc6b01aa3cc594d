using System.Globalization;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Xapi.Server.Tests;

/// <summary>
/// A real, throwaway PostgreSQL server: a fresh cluster in a temp dir on a loopback port, run
/// as the postgres user when the tests run as root (PostgreSQL refuses to run as root).
/// </summary>
public sealed class PostgresCluster : IAsyncDisposable
{
    private readonly string _directory;
    private readonly string _binaries;

    private PostgresCluster(string directory, string binaries, int port)
    {
        _directory = directory;
        _binaries = binaries;
        Port = port;
    }

    public int Port { get; }

    public static string? FindBinaries() =>
        Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin"))
                .Where(d => File.Exists(Path.Combine(d, "initdb"))).OrderDescending().FirstOrDefault()
            : null;

    /// <summary>Starts a cluster, or ignores the test where PostgreSQL is not installed (and fails it where the test command should have installed it).</summary>
    public static async Task<PostgresCluster> StartAsync()
    {
        var binaries = FindBinaries();
        if (binaries is null)
        {
            if (Environment.GetEnvironmentVariable("XAPI_POSTGRES_TESTS") == "required")
            {
                Assert.Fail("PostgreSQL is not installed; the test command should have installed it");
            }
            Assert.Ignore("PostgreSQL is not installed (run the README's test command)");
        }
        var directory = Directory.CreateTempSubdirectory("xapi-pg-").FullName;
        if (IsRoot)
        {
            await RunAsync("chown", "postgres", directory);
        }
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            var cluster = new PostgresCluster(directory, binaries!, ((IPEndPoint)listener.LocalEndpoint).Port);
            listener.Stop();
            await cluster.AsPostgresAsync("initdb", "-D", cluster.DataDirectory, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync");
            await cluster.StartServerAsync();
            return cluster;
        }
    }

    private string DataDirectory => Path.Combine(_directory, "data");

    public string ConnectionString(string database = "postgres") =>
        $"Host=127.0.0.1;Port={Port};Username=postgres;Database={database};Timeout=3;Command Timeout=10;Pooling=true";

    /// <summary>A database of its own for one test.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = "xapi_" + Guid.NewGuid().ToString("N")[..12];
        // Unpooled: a pooled connection may predate a restart of the server by an outage test.
        await using var connection = new NpgsqlConnection(ConnectionString() + ";Pooling=false");
        await connection.OpenAsync();
        await using var create = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
        await create.ExecuteNonQueryAsync();
        return ConnectionString(name);
    }

    /// <summary>The port of the streaming replica, once <see cref="StartReplicaAsync"/> made one.</summary>
    public int? ReplicaPort { get; private set; }

    private string ReplicaDirectory => Path.Combine(_directory, "replica");

    /// <summary>
    /// A streaming replica of this server (<c>pg_basebackup</c>), made synchronous: the primary
    /// acknowledges a commit only once the replica has it.
    /// </summary>
    public async Task StartReplicaAsync()
    {
        const string Name = "xapi_replica";
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            ReplicaPort = ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        await AsPostgresAsync("pg_basebackup", "-D", ReplicaDirectory, "-h", "127.0.0.1", "-p", Port.ToString(CultureInfo.InvariantCulture),
            "-U", "postgres", "-X", "stream", "-R", "--no-sync", "-c", "fast");
        await File.AppendAllTextAsync(Path.Combine(ReplicaDirectory, "postgresql.auto.conf"),
            $"\nprimary_conninfo = 'host=127.0.0.1 port={Port} user=postgres application_name={Name}'\n");
        await AsPostgresAsync("pg_ctl", "-D", ReplicaDirectory, "-o", $"-k {_directory} -p {ReplicaPort} -h 127.0.0.1", "-l", Path.Combine(_directory, "replica.log"), "-w", "start");
        await using var connection = new NpgsqlConnection(ConnectionString() + ";Pooling=false");
        await connection.OpenAsync();
        await using (var synchronous = new NpgsqlCommand($"ALTER SYSTEM SET synchronous_standby_names = '{Name}'; SELECT pg_reload_conf();", connection))
        {
            await synchronous.ExecuteNonQueryAsync();
        }
        // Streaming starts on its own schedule; the primary reports when the replica is in sync.
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using var state = new NpgsqlCommand($"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{Name}' AND sync_state = 'sync'", connection);
        while ((long)(await state.ExecuteScalarAsync(limit.Token))! == 0)
        {
            await Task.Delay(100, limit.Token);
        }
    }

    /// <summary>The replica becomes a primary (after the primary died).</summary>
    public Task PromoteReplicaAsync() => AsPostgresAsync("pg_ctl", "-D", ReplicaDirectory, "-w", "promote");

    /// <summary>Both servers, for Npgsql to connect to whichever is the primary.</summary>
    public string MultiHostConnectionString(string connectionString) =>
        connectionString.Replace($"Host=127.0.0.1;Port={Port};", $"Host=127.0.0.1:{Port},127.0.0.1:{ReplicaPort};", StringComparison.Ordinal)
        + ";Target Session Attributes=primary";

    /// <summary>The replica's own address, for reading what it holds.</summary>
    public string ReplicaConnectionString(string connectionString) =>
        connectionString.Replace($"Port={Port};", $"Port={ReplicaPort};", StringComparison.Ordinal) + ";Pooling=false";

    public Task StartServerAsync() =>
        AsPostgresAsync("pg_ctl", "-D", DataDirectory, "-o", $"-k {_directory} -p {Port} -h 127.0.0.1", "-l", Path.Combine(_directory, "log"), "-w", "start");

    /// <summary>An outage: the server goes away at once, connections and all.</summary>
    public Task StopServerAsync() => AsPostgresAsync("pg_ctl", "-D", DataDirectory, "-m", "immediate", "-w", "stop");

    private Task AsPostgresAsync(string tool, params string[] args) =>
        IsRoot ? RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_binaries, tool), .. args]) : RunAsync(Path.Combine(_binaries, tool), args);

    private static bool IsRoot => Environment.UserName == "root";

    private static async Task RunAsync(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', args)} failed: {await output}{await error}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        try
        {
            await StopServerAsync();
        }
        catch (InvalidOperationException)
        {
        }
        if (ReplicaPort is not null)
        {
            try
            {
                await AsPostgresAsync("pg_ctl", "-D", ReplicaDirectory, "-m", "immediate", "-w", "stop");
            }
            catch (InvalidOperationException)
            {
            }
        }
        Directory.Delete(_directory, recursive: true);
    }
}
