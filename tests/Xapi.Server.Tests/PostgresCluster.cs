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
        Directory.Delete(_directory, recursive: true);
    }
}
