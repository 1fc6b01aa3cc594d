using Xapi.Server.Hosting;

/// <summary>A daemon on a loopback port with a throwaway data dir, as every benchmark runs one.</summary>
internal sealed class BenchDaemon : IAsyncDisposable
{
    public const string Password = "bench";

    private readonly string _dataDir;

    private BenchDaemon(XapiHost host, string dataDir)
    {
        Host = host;
        _dataDir = dataDir;
    }

    public XapiHost Host { get; }

    public static async Task<BenchDaemon> StartAsync(string database = "memory", string? postgres = null, Action<ServerOptions>? configure = null)
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-bench-").FullName;
        var options = new ServerOptions
        {
            HttpPort = 0,
            NbdPort = 0,
            ListenAddress = "127.0.0.1",
            DataDir = dataDir,
            Database = database,
            Postgres = postgres,
            RootPassword = Password,
            PasswordHashIterations = 1_000,
            LogFile = "",
            LogLevel = "Warning",
        };
        configure?.Invoke(options);
        var host = XapiHost.Create(options);
        await host.StartAsync();
        return new BenchDaemon(host, dataDir);
    }

    public async ValueTask DisposeAsync()
    {
        await Host.DisposeAsync();
        Directory.Delete(_dataDir, recursive: true);
    }
}
