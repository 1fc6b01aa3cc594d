using Microsoft.Extensions.DependencyInjection;
using Xapi.Database;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>A real daemon on a loopback port with a throwaway data dir.</summary>
public sealed class TestDaemon : IAsyncDisposable
{
    public const string Password = "test-password";

    private readonly string _dataDir;
    private readonly ServerOptions _options;
    private readonly TimeProvider? _time;
    private bool _handedOver;

    private TestDaemon(XapiHost host, string dataDir, ServerOptions options, TimeProvider? time)
    {
        Host = host;
        _dataDir = dataDir;
        _options = options;
        _time = time;
    }

    public XapiHost Host { get; }

    public Uri Uri => Host.HttpUri;

    public XapiDatabase Database => Host.Database;

    public T Service<T>() where T : notnull => Host.Services.GetRequiredService<T>();

    public static async Task<TestDaemon> StartAsync(Action<ServerOptions>? configure = null, TimeProvider? time = null,
        Action<ApiHandlers<CallContext>, IServiceProvider>? customize = null)
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-test-").FullName;
        var options = new ServerOptions
        {
            HttpPort = 0,
            ListenAddress = "127.0.0.1",
            DataDir = dataDir,
            RootPassword = Password,
            PasswordHashIterations = 1_000,
            FailedLoginDelay = TimeSpan.FromMilliseconds(500),
            LogFile = "",
            LogLevel = "Warning",
            // Many daemons run at once: NBD only where a test asks for it (on a free port).
            NbdPort = -1,
        };
        configure?.Invoke(options);
        var host = XapiHost.Create(options, time, customize);
        await host.StartAsync();
        return new TestDaemon(host, dataDir, options, time);
    }

    /// <summary>Stops this daemon and starts another on the same data dir and options (a host's toolstack restarted).</summary>
    public async Task<TestDaemon> RestartAsync()
    {
        await StopAsync();
        return await StartAgainAsync();
    }

    /// <summary>Stops this daemon, keeping its data dir for <see cref="StartAgainAsync"/>.</summary>
    public async Task StopAsync()
    {
        await Host.DisposeAsync();
        _handedOver = true;
    }

    /// <summary>Starts a daemon on this stopped one's data dir and options.</summary>
    public async Task<TestDaemon> StartAgainAsync()
    {
        var host = XapiHost.Create(_options, _time);
        await host.StartAsync();
        return new TestDaemon(host, _dataDir, _options, _time);
    }

    public XenApiClient Client(RpcDialect dialect = RpcDialect.XmlRpc) => new(Uri, dialect);

    /// <summary>Waits until clients can see everything committed so far (writes made behind the API's back).</summary>
    public ValueTask SettledAsync() => Database.WhenVisibleAsync(Database.CommittedGeneration);

    /// <summary>Inserts a row behind the API's back and waits until clients can see it.</summary>
    public async Task<Row> InsertAsync(ClassMeta cls, Dictionary<string, object?>? values = null)
    {
        var row = Database.Write(tx => tx.Create(cls, values ?? []));
        await Database.WhenVisibleAsync(row.Created);
        return row;
    }

    public async Task<XenApiClient> LoginAsync(RpcDialect dialect = RpcDialect.XmlRpc)
    {
        var client = Client(dialect);
        await client.LoginAsync("root", Password);
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        await Host.DisposeAsync();
        if (_handedOver)
        {
            return;
        }
        try
        {
            Directory.Delete(_dataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Removes a data dir that several daemons of one test shared.</summary>
public sealed class DirectoryCleanup(string path) : IDisposable
{
    public void Dispose()
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

public static class Dialects
{
    public static readonly RpcDialect[] All = [RpcDialect.XmlRpc, RpcDialect.JsonRpcV1, RpcDialect.JsonRpcV2];
}

public static class XenApiAssert
{
    public static async Task<XenApiException> FailsAsync(Func<Task> call, string code, params string[] parameters)
    {
        try
        {
            await call();
        }
        catch (XenApiException e)
        {
            Assert.That(e.Code, Is.EqualTo(code), e.Message);
            if (parameters.Length > 0)
            {
                Assert.That(e.Parameters, Is.EqualTo(parameters));
            }
            return e;
        }
        Assert.Fail($"expected {code}, but the call succeeded");
        throw new InvalidOperationException();
    }
}

/// <summary>A fixture with one daemon and one logged-in client for all its tests.</summary>
public abstract class LoggedInFixture(RpcDialect dialect)
{
    protected TestDaemon Daemon { get; private set; } = null!;

    protected XenApiClient Client { get; private set; } = null!;

    protected RpcDialect Dialect => dialect;

    [OneTimeSetUp]
    public async Task StartDaemonAsync()
    {
        Daemon = await TestDaemon.StartAsync();
        Client = await Daemon.LoginAsync(dialect);
    }

    [OneTimeTearDown]
    public async Task StopDaemonAsync()
    {
        Client.Dispose();
        await Daemon.DisposeAsync();
    }
}
