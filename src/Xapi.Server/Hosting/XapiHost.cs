using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serilog;
using Serilog.Events;
using Xapi.Database;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Api;
using Xapi.Server.Dispatch;
using Xapi.Server.Events;
using Xapi.Server.Http;
using Xapi.Server.Operations;
using Xapi.Server.Sessions;
using Xapi.Server.Tasks;

namespace Xapi.Server.Hosting;

/// <summary>The daemon: Kestrel, the RPC endpoints, the database and first-boot objects.</summary>
public sealed class XapiHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Serilog.Core.Logger _serilog;
    private Timer? _sessionReaper;

    private XapiHost(WebApplication app, Serilog.Core.Logger serilog, XapiDatabase database, ServerOptions options)
    {
        _app = app;
        _serilog = serilog;
        Database = database;
        Options = options;
    }

    public XapiDatabase Database { get; }

    /// <summary>The durable store, when the database is the journal.</summary>
    public JournalStore? Journal { get; private init; }

    /// <summary>The PostgreSQL store, when the database is PostgreSQL.</summary>
    public Xapi.Database.Postgres.PostgresStore? Postgres { get; private init; }

    public ServerOptions Options { get; }

    public IServiceProvider Services => _app.Services;

    /// <summary>The plain-HTTP address actually bound (useful with port 0).</summary>
    public Uri HttpUri { get; private set; } = null!;

    public Uri? HttpsUri { get; private set; }

    /// <summary>The root password generated on first boot, when none was configured.</summary>
    public string? GeneratedRootPassword { get; private set; }

    /// <param name="customize">Adjusts the custom message handlers before dispatch starts (tests use it).</param>
    public static XapiHost Create(ServerOptions options, TimeProvider? time = null, Action<ApiHandlers<CallContext>, IServiceProvider>? customize = null)
    {
        Directory.CreateDirectory(options.DataDir);
        var serilogConfig = new LoggerConfiguration()
            .MinimumLevel.Is(Enum.Parse<LogEventLevel>(options.LogLevel, ignoreCase: true))
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .Enrich.FromLogContext()
            .WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}");
        var logFile = options.LogFile ?? Path.Combine(options.DataDir, "xapi.log");
        if (logFile.Length > 0)
        {
            serilogConfig.WriteTo.File(logFile, rollingInterval: RollingInterval.Day, retainedFileCountLimit: 7);
        }
        var serilog = serilogConfig.CreateLogger();

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSerilog(serilog);
        builder.Logging.SetMinimumLevel(Microsoft.Extensions.Logging.LogLevel.Trace);

        var passwords = PasswordStore.Open(options.DataDir, options.RootPassword, options.PasswordHashIterations, out var generated);
        var database = new XapiDatabase(options.TombstoneLimit);
        JournalStore? journal = null;
        Xapi.Database.Postgres.PostgresStore? postgres = null;
        var loggerFactory = new Serilog.Extensions.Logging.SerilogLoggerFactory(serilog);
        switch (options.Database.ToLowerInvariant())
        {
            case "journal":
                journal = JournalStore.Open(database, Path.Combine(options.DataDir, "db"),
                    loggerFactory.CreateLogger<JournalStore>(), options.JournalCompactBytes);
                break;
            case "memory":
                break;
            case "postgres":
                postgres = Xapi.Database.Postgres.PostgresStore.OpenAsync(database,
                    options.Postgres ?? throw new InvalidOperationException("--database postgres needs --postgres CONNECTION_STRING"),
                    loggerFactory.CreateLogger<Xapi.Database.Postgres.PostgresStore>()).GetAwaiter().GetResult();
                break;
            default:
                throw new InvalidOperationException($"unknown database backend '{options.Database}': use journal, memory or postgres");
        }
        var firstBoot = new FirstBoot(options.DataDir);
        var facts = HostFacts.Read();

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = null;
            var address = IPAddress.Parse(options.ListenAddress);
            kestrel.Listen(address, options.HttpPort);
            if (options.UnixSocketPath.Length > 0)
            {
                // A socket left by a daemon that died would refuse the bind.
                File.Delete(options.UnixSocketPath);
                kestrel.ListenUnixSocket(options.UnixSocketPath, listen => listen.Use(LocalPeer.Record));
            }
            if (options.HttpsPort != 0)
            {
                var certificate = SelfSignedCertificate.LoadOrCreate(options.DataDir, facts.Hostname, out _);
                kestrel.Listen(address, options.HttpsPort < 0 ? 0 : options.HttpsPort, listen => listen.UseHttps(certificate));
            }
        });

        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(database);
        builder.Services.AddSingleton(passwords);
        builder.Services.AddSingleton(time ?? TimeProvider.System);
        builder.Services.AddSingleton(new RpcLimits(options.MaxBodyBytes, options.MaxNestingDepth) { MaxBufferedReplyBytes = options.MaxBufferedReplyBytes });
        builder.Services.AddSingleton<SessionManager>();
        builder.Services.AddSingleton<EventHub>();
        builder.Services.AddSingleton<TaskManager>();
        builder.Services.AddSingleton(AllowedOperationsRules.Default());
        builder.Services.AddSingleton<OperationGuard>();
        builder.Services.AddSingleton(new ImplicitMessages([new NetworkCreation()]));
        builder.Services.AddSingleton(services => Customized(services, new ApiHandlers<CallContext>
        {
            Session = new SessionApi(services.GetRequiredService<SessionManager>()),
            Host = new HostApi(services.GetRequiredService<TimeProvider>()),
            Event = new EventApi(
                services.GetRequiredService<XapiDatabase>(),
                services.GetRequiredService<EventHub>(),
                services.GetRequiredService<SessionManager>(),
                services.GetRequiredService<TimeProvider>(),
                options),
            Task = new TaskApi(services.GetRequiredService<TaskManager>()),
            Message = new MessageApi(services.GetRequiredService<TimeProvider>()),
            Pool = new PoolApi(journal),
            Role = new RoleApi(),
        }));
        ApiHandlers<CallContext> Customized(IServiceProvider services, ApiHandlers<CallContext> handlers)
        {
            customize?.Invoke(handlers, services);
            return handlers;
        }
        builder.Services.AddSingleton<Dispatcher>();
        builder.Services.AddSingleton<RpcEndpoint>();
        builder.Services.AddSingleton<DatabaseDumpEndpoint>();

        var app = builder.Build();
        var rpc = app.Services.GetRequiredService<RpcEndpoint>();
        var dump = app.Services.GetRequiredService<DatabaseDumpEndpoint>();
        // One terminal handler and no endpoint routing: routing a POST on "/" past a GET route
        // cost more than the whole XenAPI call.
        app.Run(context =>
        {
            var method = context.Request.Method;
            if (context.Request.Path == DatabaseDumpEndpoint.Path && (HttpMethods.IsGet(method) || HttpMethods.IsPut(method)))
            {
                return dump.HandleAsync(context);
            }
            if (HttpMethods.IsPost(method))
            {
                return rpc.HandleAsync(context);
            }
            if (HttpMethods.IsOptions(method))
            {
                return RpcEndpoint.PreflightAsync(context);
            }
            if (HttpMethods.IsGet(method) && context.Request.Path == "/")
            {
                context.Response.ContentType = "text/plain";
                return context.Response.WriteAsync("xapi-dotnet: XenAPI on XML-RPC (POST /) and JSON-RPC (POST /jsonrpc)\n");
            }
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
        });

        if (!database.Snapshot.All<PoolRecord>().Any())
        {
            firstBoot.Populate(database, facts);
        }
        FirstBoot.SynchronizeRoles(database);
        var thisHost = new HostRef(firstBoot.HostRef);
        app.Services.GetRequiredService<SessionManager>().ThisHost = thisHost;
        app.Services.GetRequiredService<TaskManager>().ThisHost = thisHost;
        // Handlers that do not match the datamodel stop the daemon here, not at a client's call.
        app.Services.GetRequiredService<Dispatcher>();

        var host = new XapiHost(app, serilog, database, options) { GeneratedRootPassword = generated, Journal = journal, Postgres = postgres };
        return host;
    }

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _app.StartAsync(cancellationToken);
        var addresses = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToList();
        var logger = _app.Services.GetRequiredService<ILogger<XapiHost>>();
        HttpUri = ToClientUri(addresses.First(a => a.StartsWith("http:", StringComparison.Ordinal)));
        var https = addresses.FirstOrDefault(a => a.StartsWith("https:", StringComparison.Ordinal));
        HttpsUri = https is null ? null : ToClientUri(https);
        if (GeneratedRootPassword is not null)
        {
            // Printed once, on the boot that generated it; only its hash is kept.
            Console.WriteLine($"Generated root password (shown once): {GeneratedRootPassword}");
        }
        var sessions = _app.Services.GetRequiredService<SessionManager>();
        var tasks = _app.Services.GetRequiredService<TaskManager>();
        _sessionReaper = new Timer(_ =>
        {
            sessions.ExpireIdle();
            tasks.CollectFinished();
        }, null, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1));
        logger.LogInformation("XenAPI {Major}.{Minor} listening on {Addresses} with data in {DataDir}",
            ApiSchema.ApiVersionMajor, ApiSchema.ApiVersionMinor, addresses, Path.GetFullPath(Options.DataDir));
    }

    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    private static Uri ToClientUri(string address)
    {
        var uri = new Uri(address.Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal).Replace("[::]", "[::1]", StringComparison.Ordinal));
        return new Uri($"{uri.Scheme}://{uri.Host}:{uri.Port}/");
    }

    public async ValueTask DisposeAsync()
    {
        if (_sessionReaper is not null)
        {
            await _sessionReaper.DisposeAsync();
        }
        await _app.StopAsync();
        await _app.DisposeAsync();
        Journal?.Dispose();
        Postgres?.Dispose();
        await _serilog.DisposeAsync();
    }
}
