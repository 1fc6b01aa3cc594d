using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
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
using Xapi.Server.Pool;
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

    /// <summary>The libxl context of the Xen backend (<c>--hypervisor xen</c>); null on the simulator.</summary>
    private IDisposable? Libxl { get; init; }

    public IServiceProvider Services => _app.Services;

    private System.Security.Cryptography.X509Certificates.X509Certificate2? NbdCertificate { get; init; }

    /// <summary>The NBD server's address once started; null when it is off.</summary>
    public IPEndPoint? NbdEndPoint => _app.Services.GetRequiredService<NbdEndpoint>().EndPoint;

    /// <summary>The plain-HTTP address actually bound (useful with port 0).</summary>
    public Uri HttpUri { get; private set; } = null!;

    public Uri? HttpsUri { get; private set; }

    /// <summary>The connections each listener holds at most (the option, lowered to fit the descriptor limit).</summary>
    public int ConnectionsPerListener { get; private init; }

    /// <summary>The process's open-file limit after start-up raised it; null where unknown.</summary>
    public long? OpenFileLimit { get; private init; }

    /// <summary>The root password generated on first boot, when none was configured.</summary>
    public string? GeneratedRootPassword { get; private set; }

    /// <param name="customize">Adjusts the custom message handlers before dispatch starts (tests use it).</param>
    public static XapiHost Create(ServerOptions options, TimeProvider? time = null, Action<ApiHandlers<CallContext>, IServiceProvider>? customize = null)
    {
        try
        {
            options.Validate();
        }
        catch (FormatException e)
        {
            throw new StartupException(e.Message, e);
        }
        // Before the data dir is touched: a machine that cannot run Xen is told so in one line.
        var libxl = options.Hypervisor.Equals(ServerOptions.XenHypervisor, StringComparison.OrdinalIgnoreCase) ? OpenXen() : null;
        try
        {
            return Create(options, time, customize, libxl);
        }
        catch
        {
            ((IDisposable?)libxl)?.Dispose();
            throw;
        }
    }

    /// <summary>The libxl context the Xen backend drives, once the environment probe has passed.</summary>
    private static Xapi.LibXenCtrl.Interop.LibxlContext OpenXen()
    {
        if (Xapi.LibXenCtrl.Interop.XenEnvironment.Probe() is { } missing)
        {
            throw new StartupException(missing);
        }
        if (!OperatingSystem.IsLinux())
        {
            throw new StartupException("--hypervisor xen: Xen's toolstack runs only in a Linux dom0");
        }
        try
        {
            // libxl's own messages from warnings up go to stderr beside the daemon's log.
            return Xapi.LibXenCtrl.Interop.LibxlContext.Open(Xapi.LibXenCtrl.Interop.LibxlContext.LogWarnings);
        }
        catch (Exception e) when (e is Xapi.LibXenCtrl.Interop.LibxlException or DllNotFoundException or EntryPointNotFoundException)
        {
            throw new StartupException($"--hypervisor xen: cannot open a libxl context ({e.Message}); is xenstored running?", e);
        }
    }

    private static XapiHost Create(ServerOptions options, TimeProvider? time, Action<ApiHandlers<CallContext>, IServiceProvider>? customize,
        Xapi.LibXenCtrl.Interop.LibxlContext? libxl)
    {
        DataDirectory.Prepare(options.DataDir);
        // Everything the data dir holds is read and checked before anything in it is written, so a
        // refused start leaves it as it was.
        var installationUuid = Inventory.Read(options.DataDir);
        PasswordStore.Check(options.DataDir);
        var facts = libxl is not null && OperatingSystem.IsLinux() ? ReadXenFacts(libxl) : HostFacts.Read();
        // A daemon bound to one address is reached only there: that is the address its host
        // record gives (pool members find each other and clients are redirected by it), as
        // several hosts of a pool on one machine each have their own loopback address.
        if (IPAddress.Parse(options.ListenAddress) is var bound && !bound.Equals(IPAddress.Any) && !bound.Equals(IPAddress.IPv6Any))
        {
            facts = facts with { Address = bound.ToString() };
        }
        var certificate = options.HttpsPort != 0 && SelfSignedCertificate.Exists(options.DataDir)
            ? SelfSignedCertificate.LoadOrCreate(options.DataDir, facts.Hostname, out _)
            : null;
        var journalDirectory = Path.Combine(options.DataDir, "db");
        var backend = options.Database.ToLowerInvariant();
        if (backend == "journal" && installationUuid is not null && !JournalStore.HoldsDatabase(journalDirectory))
        {
            throw EmptyDatabaseOverInstallation(options, installationUuid);
        }

        var serilogConfig = new LoggerConfiguration()
            .MinimumLevel.Is(Enum.Parse<LogEventLevel>(options.LogLevel, ignoreCase: true))
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .Enrich.FromLogContext()
            // Last, so it sees every property: clients' values are escaped and cut before any sink.
            .Enrich.With(new SafeLogValues(options.MaxLoggedValueLength))
            .WriteTo.Console(outputTemplate: SafeLogValues.ConsoleTemplate);
        var logFile = options.LogFile ?? Path.Combine(options.DataDir, "xapi.log");
        if (logFile.Length > 0)
        {
            serilogConfig.WriteTo.File(logFile, outputTemplate: SafeLogValues.FileTemplate, rollingInterval: RollingInterval.Day, retainedFileCountLimit: 7);
        }
        var serilog = serilogConfig.CreateLogger();
        var database = new XapiDatabase(options.TombstoneLimit);
        JournalStore? journal = null;
        Xapi.Database.Postgres.PostgresStore? postgres = null;
        Xapi.Database.Postgres.PostgresStore? standby = null;
        try
        {
            var loggerFactory = new Serilog.Extensions.Logging.SerilogLoggerFactory(serilog);
            switch (backend)
            {
                case "journal":
                    journal = JournalStore.Open(database, journalDirectory,
                        loggerFactory.CreateLogger<JournalStore>(), options.JournalCompactBytes, options.SalvageJournal);
                    break;
                case "postgres":
                    (postgres, journal, standby) = OpenPostgresPool(database, options, installationUuid, journalDirectory, facts.Address, loggerFactory);
                    break;
            }
            var populated = database.Snapshot.All<PoolRecord>().Any();
            if (!populated && backend == "journal" && installationUuid is not null)
            {
                throw EmptyDatabaseOverInstallation(options, installationUuid);
            }
            var identity = populated
                ? Identity(database, options.DataDir, installationUuid, loggerFactory.CreateLogger<XapiHost>())
                : installationUuid ?? Guid.NewGuid().ToString("D");
            var host = Build(options, time, customize, serilog, database, journal, postgres, standby, facts, certificate, new FirstBoot(identity), populated, libxl);
            return host;
        }
        catch
        {
            // Closed without the final compaction: a refused start writes nothing.
            journal?.Abandon();
            postgres?.Dispose();
            standby?.Dispose();
            serilog.Dispose();
            throw;
        }
    }

    /// <summary>This host's facts on Xen: dom0's /proc, with the machine's CPUs and memory and dom0's own from libxl.</summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static HostFacts ReadXenFacts(Xapi.LibXenCtrl.Interop.LibxlContext libxl)
    {
        try
        {
            return XenHostFacts.Of(HostFacts.Read(), libxl.GetPhysInfo(), libxl.TryGetDomain(0));
        }
        catch (Xapi.LibXenCtrl.Interop.LibxlException e)
        {
            throw new StartupException($"--hypervisor xen: cannot read the host from libxl ({e.Message})", e);
        }
    }

    private static StartupException EmptyDatabaseOverInstallation(ServerOptions options, string installationUuid) => new(
        $"{Path.Combine(options.DataDir, "db")} holds no pool database, but {Inventory.PathIn(options.DataDir)} says this host was installed (installation {installationUuid}); refusing to start a new pool over it. Restore the db directory from a backup, or move {Inventory.FileName} aside to start a new pool.");

    /// <summary>
    /// The PostgreSQL backend in a pool: the host that takes the store's lock is the pool's master
    /// and writes through to it (a member whose master died before it started takes the pool over
    /// here). A daemon at the master's own address waits for the lock, as that host's standby. With
    /// the lock held by another host, this host keeps its copy in a journal of its own and
    /// the store at hand to take over later: an installed host (the old master back, or a member)
    /// is a member of the master the store names, starting from the stored database if it holds
    /// none; a fresh host is a pool of its own until it joins.
    /// </summary>
    private static (Xapi.Database.Postgres.PostgresStore? Master, JournalStore? Copy, Xapi.Database.Postgres.PostgresStore? Standby) OpenPostgresPool(
        XapiDatabase database, ServerOptions options, string? installationUuid, string journalDirectory, string address, Microsoft.Extensions.Logging.ILoggerFactory loggers)
    {
        var logger = loggers.CreateLogger<XapiHost>();
        Xapi.Database.Postgres.PostgresStore store;
        bool locked;
        try
        {
            store = Xapi.Database.Postgres.PostgresStore.Standby(database, options.Postgres!, loggers.CreateLogger<Xapi.Database.Postgres.PostgresStore>());
            locked = store.TryLockAsync().GetAwaiter().GetResult();
        }
        catch (System.Data.Common.DbException e)
        {
            throw new StartupException($"cannot open the PostgreSQL pool database ({e.Message}); check --postgres and that the server is up.", e);
        }
        catch (ArgumentException e)
        {
            throw new StartupException($"the --postgres connection string is not valid ({e.Message}).", e);
        }
        JournalStore? copy = null;
        try
        {
            if (locked)
            {
                store.OpenAsMasterAsync().GetAwaiter().GetResult();
                if (!PoolRole.Read(options.DataDir).IsMaster)
                {
                    PoolRole.Master.Write(options.DataDir);
                    logger.LogWarning("No daemon holds the pool database: this member takes the pool over as its master");
                }
                return (store, null, null);
            }
            var master = store.MasterAddressAsync().GetAwaiter().GetResult();
            if (master is null || master == address)
            {
                // A daemon at the master's own address is that host's standby: it serves once the master stops.
                store.AcquireMasterLockAsync().GetAwaiter().GetResult();
                store.OpenAsMasterAsync().GetAwaiter().GetResult();
                return (store, null, null);
            }
            copy = JournalStore.Open(database, journalDirectory, loggers.CreateLogger<JournalStore>(), options.JournalCompactBytes, options.SalvageJournal);
            if (installationUuid is null)
            {
                logger.LogWarning("Another daemon is master of the pool database (the pool of {Master}); this new host is a pool of its own until it joins", master);
                return (null, copy, store);
            }
            if (!database.Snapshot.All<PoolRecord>().Any())
            {
                store.LoadCopyAsync().GetAwaiter().GetResult();
            }
            if (master is not null && PoolRole.Read(options.DataDir).MasterAddress != master)
            {
                new PoolRole(master).Write(options.DataDir);
                logger.LogWarning("The pool database names {Master} the pool's master: this host is its member", master);
            }
            return (null, copy, store);
        }
        catch
        {
            copy?.Abandon();
            store.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Which host of the loaded pool this daemon is. The inventory says, and must name a host the
    /// database holds. Without one, it is rebuilt when the answer is unambiguous: the database holds
    /// exactly one host, and that host's ref derives from its uuid as first boot made it, so the
    /// rebuilt inventory gives back the same identities for every first-boot object.
    /// </summary>
    private static string Identity(XapiDatabase database, string dataDir, string? installationUuid, Microsoft.Extensions.Logging.ILogger logger)
    {
        var path = Inventory.PathIn(dataDir);
        var hosts = database.Snapshot.All<HostRecord>().ToList();
        if (installationUuid is not null)
        {
            if (hosts.Any(h => h.Ref.Value == new FirstBoot(installationUuid).HostRef))
            {
                return installationUuid;
            }
            throw new StartupException(
                $"{path} names installation {installationUuid}, but the pool database holds no such host (it holds {hosts.Count}: {string.Join(", ", hosts.Select(h => h.Uuid))}); the inventory or the database belongs to another host. Restore this host's {Inventory.FileName}, or move it aside to rebuild it from the database.");
        }
        var ours = hosts.Where(h => new FirstBoot(h.Uuid).HostRef == h.Ref.Value).ToList();
        if (hosts.Count != 1 || ours.Count != 1)
        {
            throw new StartupException(
                $"{path} is missing and the pool database holds {hosts.Count} hosts, so which one this is cannot be told; restore {Inventory.FileName} (its INSTALLATION_UUID is this host's uuid).");
        }
        Inventory.Write(dataDir, ours[0].Uuid);
        logger.LogWarning("{Inventory} was missing; rebuilt it from the pool database's only host {Host}", path, ours[0].Uuid);
        return ours[0].Uuid;
    }

    private static XapiHost Build(ServerOptions options, TimeProvider? time, Action<ApiHandlers<CallContext>, IServiceProvider>? customize,
        Serilog.Core.Logger serilog, XapiDatabase database, JournalStore? journal, Xapi.Database.Postgres.PostgresStore? postgres, Xapi.Database.Postgres.PostgresStore? standby,
        HostFacts facts, System.Security.Cryptography.X509Certificates.X509Certificate2? certificate, FirstBoot firstBoot, bool populated,
        Xapi.LibXenCtrl.Interop.LibxlContext? libxl)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSerilog(serilog);
        builder.Logging.SetMinimumLevel(Microsoft.Extensions.Logging.LogLevel.Trace);

        var passwords = PasswordStore.Open(options.DataDir, options.RootPassword, options.PasswordHashIterations, out var generated);
        if (options.HttpsPort != 0)
        {
            certificate ??= SelfSignedCertificate.LoadOrCreate(options.DataDir, facts.Hostname, out _);
        }

        var descriptors = DescriptorLimit.RaiseToHardLimit();
        var listeners = 1 + (options.UnixSocketPath.Length > 0 ? 1 : 0) + (options.HttpsPort != 0 ? 1 : 0);
        var connectionsPerListener = DescriptorLimit.ConnectionsPerListener(options.MaxConnections, listeners, descriptors);
        // Registered after Kestrel's own, so its connections and this transport use it.
        builder.Services.AddSingleton<IMemoryPoolFactory<byte>, LargeBlockMemoryPoolFactory>();
        // Registered last, so Kestrel binds with it rather than its own socket transport.
        builder.Services.AddSingleton<IConnectionListenerFactory>(services =>
            new BoundedListenerFactory(() => connectionsPerListener, services.GetRequiredService<ILoggerFactory>(),
                services.GetService<IMemoryPoolFactory<byte>>()));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.KeepAliveTimeout = options.IdleConnectionTimeout;
            // Kestrel's defaults, stated because the slowloris protection rests on them: headers
            // complete within 30 s, bodies arrive at 240 bytes/s at least after a 5 s grace.
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(30);
            kestrel.Limits.MinRequestBodyDataRate = new Microsoft.AspNetCore.Server.Kestrel.Core.MinDataRate(240, TimeSpan.FromSeconds(5));
            var address = IPAddress.Parse(options.ListenAddress);
            // Resolved at the first connection: the services are built after Kestrel's options.
            var cli = new Lazy<CliEndpoint>(() => kestrel.ApplicationServices.GetRequiredService<CliEndpoint>());
            ConnectionDelegate ServeCli(ConnectionDelegate next) => CliEndpoint.Intercept(next, () => cli.Value, options.IdleConnectionTimeout);
            kestrel.Listen(address, options.HttpPort, listen => listen.Use(ServeCli));
            if (options.UnixSocketPath.Length > 0)
            {
                // A socket left by a daemon that died would refuse the bind.
                File.Delete(options.UnixSocketPath);
                kestrel.ListenUnixSocket(options.UnixSocketPath, listen => listen.Use(LocalPeer.Record).Use(ServeCli));
            }
            if (certificate is not null)
            {
                kestrel.Listen(address, options.HttpsPort < 0 ? 0 : options.HttpsPort, listen => listen.UseHttps(certificate).Use(ServeCli));
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
        builder.Services.AddSingleton<IEnumerable<Xapi.Storage.ISrDriver>>(_ => StorageDrivers());
        builder.Services.AddSingleton(services => new Xapi.Storage.Service.StorageManager(
            services.GetRequiredService<XapiDatabase>(), services.GetRequiredService<IEnumerable<Xapi.Storage.ISrDriver>>(),
            RuntimeDirectory(options.DataDir), services.GetRequiredService<ILogger<Xapi.Storage.Service.StorageManager>>()));
        builder.Services.AddSingleton<Xapi.Xenops.IHypervisor>(services => libxl is not null && OperatingSystem.IsLinux()
            ? new Xapi.LibXenCtrl.Interop.XenBackend(libxl, new Xapi.LibXenCtrl.Interop.XenBackendOptions
            {
                Disk = new StorageXenDisks(services.GetRequiredService<XapiDatabase>(), services.GetRequiredService<Xapi.Storage.Service.StorageManager>()).AttachAsync,
                StateFile = Path.Combine(options.DataDir, "xenops-xen.json"),
            })
            : Simulator(options, services.GetRequiredService<ILoggerFactory>(),
                new StorageGuestDisks(services.GetRequiredService<XapiDatabase>(), services.GetRequiredService<Xapi.Storage.Service.StorageManager>())));
        builder.Services.AddSingleton(services => new VmRuntime(services.GetRequiredService<Xapi.Xenops.IHypervisor>(),
            services.GetRequiredService<XapiDatabase>(), services.GetRequiredService<TimeProvider>(), services.GetRequiredService<ILoggerFactory>())
        {
            GuestShutdownTimeout = options.DomainShutdownTotalTimeout,
        });
        builder.Services.AddSingleton(services => new MessageApi(services.GetRequiredService<TimeProvider>(), options));
        builder.Services.AddSingleton<PBDApi>();
        builder.Services.AddSingleton<SRApi>();
        builder.Services.AddSingleton<VDIApi>();
        builder.Services.AddSingleton<IObjectLifecycle>(services => services.GetRequiredService<PBDApi>());
        builder.Services.AddSingleton<IObjectLifecycle>(services => services.GetRequiredService<VDIApi>());
        builder.Services.AddSingleton<VMApi>();
        builder.Services.AddSingleton<VBDApi>();
        builder.Services.AddSingleton<VIFApi>();
        builder.Services.AddSingleton<IObjectLifecycle>(services => services.GetRequiredService<VMApi>());
        builder.Services.AddSingleton<IImplicitSetter>(services => services.GetRequiredService<VMApi>());
        builder.Services.AddSingleton<IObjectLifecycle>(services => services.GetRequiredService<VBDApi>());
        builder.Services.AddSingleton<IObjectLifecycle>(services => services.GetRequiredService<VIFApi>());
        builder.Services.AddSingleton(firstBoot);
        builder.Services.AddSingleton(PoolSecret.LoadOrCreate(options.DataDir));
        builder.Services.AddSingleton<PoolMembership>();
        builder.Services.AddSingleton<PoolDatabaseEndpoint>();
        builder.Services.AddSingleton<MemberLiveness>();
        builder.Services.AddSingleton<Placement>();
        builder.Services.AddSingleton<Forwarder>();
        builder.Services.AddSingleton<LiveMigration>();
        builder.Services.AddSingleton(services => new PoolApi(journal, services.GetRequiredService<PoolMembership>(), firstBoot,
            services.GetRequiredService<ILogger<PoolApi>>())
        {
            Forwarder = services.GetRequiredService<Forwarder>(),
            StartAfresh = async () =>
            {
                // An ejected host's database becomes what its first boot made: a pool of its own.
                database.Write(tx =>
                {
                    foreach (var cls in ApiSchema.Classes)
                    {
                        foreach (var row in tx.All(cls).ToList())
                        {
                            tx.Delete(cls, row.Ref);
                        }
                    }
                });
                var storageBoot = services.GetRequiredService<StorageBoot>();
                firstBoot.Populate(database, facts);
                storageBoot.Populate(database, madeOnDisk: true);
                FirstBoot.SynchronizeRoles(database);
                StorageBoot.SynchronizeSmRecords(database, services.GetRequiredService<IEnumerable<Xapi.Storage.ISrDriver>>(), firstBoot);
                // Plugging reads the fresh records: they must be durable, hence visible, first.
                await database.WhenVisibleAsync(database.CommittedGeneration);
                await storageBoot.PlugAllAsync(database, CancellationToken.None);
            },
        });
        builder.Services.AddSingleton<StorageBoot>();
        builder.Services.AddSingleton(services => Customized(services, new ApiHandlers<CallContext>
        {
            Session = new SessionApi(services.GetRequiredService<SessionManager>(), services.GetRequiredService<PoolMembership>()),
            Host = new HostApi(services.GetRequiredService<TimeProvider>(), services.GetRequiredService<VmRuntime>()),
            Event = new EventApi(
                services.GetRequiredService<XapiDatabase>(),
                services.GetRequiredService<EventHub>(),
                services.GetRequiredService<SessionManager>(),
                services.GetRequiredService<TimeProvider>(),
                options),
            Task = new TaskApi(services.GetRequiredService<TaskManager>()),
            Message = services.GetRequiredService<MessageApi>(),
            Pool = services.GetRequiredService<PoolApi>(),
            Role = new RoleApi(),
            SR = services.GetRequiredService<SRApi>(),
            PBD = services.GetRequiredService<PBDApi>(),
            VDI = services.GetRequiredService<VDIApi>(),
            VM = services.GetRequiredService<VMApi>(),
            VBD = services.GetRequiredService<VBDApi>(),
            VIF = services.GetRequiredService<VIFApi>(),
        }));
        ApiHandlers<CallContext> Customized(IServiceProvider services, ApiHandlers<CallContext> handlers)
        {
            customize?.Invoke(handlers, services);
            return handlers;
        }
        builder.Services.AddSingleton<Dispatcher>();
        builder.Services.AddSingleton<RpcEndpoint>();
        builder.Services.AddSingleton<CliEndpoint>();
        builder.Services.AddSingleton<DatabaseDumpEndpoint>();
        builder.Services.AddSingleton<VdiTransferEndpoint>();
        builder.Services.AddSingleton<NbdEndpoint>();

        var app = builder.Build();
        var rpc = app.Services.GetRequiredService<RpcEndpoint>();
        var dump = app.Services.GetRequiredService<DatabaseDumpEndpoint>();
        var transfer = app.Services.GetRequiredService<VdiTransferEndpoint>();
        var poolDatabase = app.Services.GetRequiredService<PoolDatabaseEndpoint>();
        var migration = app.Services.GetRequiredService<LiveMigration>();
        // One terminal handler and no endpoint routing: routing a POST on "/" past a GET route
        // cost more than the whole XenAPI call.
        // Clients that honour the hint (.NET's SocketsHttpHandler, Node's http agent) stop reusing
        // a pooled connection before the daemon closes it, instead of racing the close with a
        // request that then fails. Kestrel closes at the timeout plus up to a heartbeat, so the
        // whole seconds below it never overlap the close.
        var keepAliveHint = (int)options.IdleConnectionTimeout.TotalSeconds is var idleSeconds and > 0
            ? new Microsoft.Extensions.Primitives.StringValues($"timeout={idleSeconds}")
            : Microsoft.Extensions.Primitives.StringValues.Empty;
        app.Run(context =>
        {
            if (keepAliveHint.Count > 0 && HttpProtocol.IsHttp11(context.Request.Protocol))
            {
                context.Response.Headers.KeepAlive = keepAliveHint;
            }
            var method = context.Request.Method;
            if (context.Request.Path == DatabaseDumpEndpoint.Path && (HttpMethods.IsGet(method) || HttpMethods.IsPut(method)))
            {
                return dump.HandleAsync(context);
            }
            if (PoolDatabaseEndpoint.Serves(context.Request))
            {
                return poolDatabase.HandleAsync(context);
            }
            if (LiveMigration.Serves(context.Request))
            {
                return migration.HandleAsync(context);
            }
            if (HttpMethods.IsPost(method))
            {
                return rpc.HandleAsync(context);
            }
            if ((context.Request.Path == VdiTransferEndpoint.ImportPath && HttpMethods.IsPut(method))
                || (context.Request.Path == VdiTransferEndpoint.ExportPath && HttpMethods.IsGet(method)))
            {
                return transfer.HandleAsync(context);
            }
            if (context.Request.Path == VdiTransferEndpoint.VmImportPath && HttpMethods.IsPut(method))
            {
                return transfer.HandleImportAsync(context);
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

        // A member takes the master's database before it writes anything, so what start-up writes
        // goes to the pool.
        var membership = app.Services.GetRequiredService<PoolMembership>();
        if (standby is not null)
        {
            membership.Succession = new PostgresSuccession(standby, app.Services.GetRequiredService<ILogger<PostgresSuccession>>());
        }
        membership.ResumeMembership(options.PoolMasterPatience);
        var storageBoot = app.Services.GetRequiredService<StorageBoot>();
        if (!populated)
        {
            firstBoot.Populate(database, facts);
            storageBoot.Populate(database);
            // Written once first boot is durable: an inventory then always comes with a database.
            database.WhenVisibleAsync(database.CommittedGeneration).AsTask().GetAwaiter().GetResult();
            Inventory.Write(options.DataDir, firstBoot.InstallationUuid);
        }
        FirstBoot.SynchronizeRoles(database);
        // On a member the operations in progress are the pool's, the master's among them: not this host's to forget.
        if (!membership.IsMember && app.Services.GetRequiredService<OperationGuard>().ForgetInterrupted() is > 0 and var freed)
        {
            app.Services.GetRequiredService<ILogger<XapiHost>>().LogWarning("Forgot the operations of {Objects} objects that the last run left unfinished", freed);
        }
        app.Services.GetRequiredService<OperationGuard>().RefreshAllowed();
        var thisHost = new HostRef(firstBoot.HostRef);
        StorageBoot.SynchronizeSmRecords(database, app.Services.GetRequiredService<IEnumerable<Xapi.Storage.ISrDriver>>(), firstBoot);
        var storage = app.Services.GetRequiredService<Xapi.Storage.Service.StorageManager>();
        storage.ThisHost = thisHost;
        storage.InUse = (snapshot, vdi) => vdi.CurrentOperations.Count > 0 || snapshot.All<VBDRecord>().Any(b => b.VDI == vdi.Ref && b.CurrentlyAttached);
        app.Services.GetRequiredService<VmRuntime>().ThisHost = thisHost;
        app.Services.GetRequiredService<Placement>().ChooseHostForVm = app.Services.GetRequiredService<VMApi>().ChooseHost;
        var sessionManager = app.Services.GetRequiredService<SessionManager>();
        var taskManager = app.Services.GetRequiredService<TaskManager>();
        sessionManager.ThisHost = thisHost;
        sessionManager.MasterAddress = () => membership.MasterAddress;
        taskManager.ThisHost = thisHost;
        sessionManager.SessionEnded += taskManager.DestroyTasksOf;
        sessionManager.IsBusy = taskManager.HasRunningTasks;
        // Handlers that do not match the datamodel stop the daemon here, not at a client's call.
        app.Services.GetRequiredService<Dispatcher>();

        var nbd = app.Services.GetRequiredService<NbdEndpoint>();
        app.Services.GetRequiredService<VDIApi>().Nbd = nbd;
        var host = new XapiHost(app, serilog, database, options)
        {
            NbdCertificate = certificate,
            GeneratedRootPassword = generated,
            Journal = journal,
            Postgres = postgres,
            ConnectionsPerListener = connectionsPerListener,
            OpenFileLimit = descriptors,
            Libxl = libxl,
        };
        return host;
    }

    // Unix socket paths hold 107 bytes: qemu-nbd's sockets go under the data dir only when it is short.
    private const int MaxRuntimeDirectoryLength = 40;

    /// <summary>Where the data path's sockets live: DATA_DIR/run, or a short directory of /tmp named after the data dir.</summary>
    private static string RuntimeDirectory(string dataDir)
    {
        var preferred = Path.GetFullPath(Path.Combine(dataDir, "run"));
        if (preferred.Length <= MaxRuntimeDirectoryLength)
        {
            return preferred;
        }
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(preferred)))[..12];
        return Path.Combine(Path.GetTempPath(), "xapi-run-" + hash);
    }

    // The simulator's state file: a restarted daemon finds its running domains again.
    public const string SimulatorStateFile = "xenops-simulator.json";

    // Changes to the simulated domains gather this long before the state file is written again.
    private static readonly TimeSpan SimulatorStateWriteDelay = TimeSpan.FromMilliseconds(100);

    // How often simulated time catches up with the wall clock (guest agents, shutdown acknowledgements, balloons).
    private static readonly TimeSpan SimulatorTick = TimeSpan.FromMilliseconds(50);

    private static Xapi.Xenops.Simulator.SimulatorBackend Simulator(ServerOptions options, ILoggerFactory loggers, Xapi.Xenops.IGuestDiskProvider disks) => new(
        new Xapi.Xenops.Simulator.SimulatorOptions
        {
            HostMemoryBytes = options.SimulatedHostMemory,
            GuestAgentDelay = options.SimulatedGuestAgentDelay,
            ShutdownAckDelay = options.SimulatedShutdownDelay,
            DirtyPagesPerSecond = options.SimulatedDirtyRate / (double)Xapi.Xenops.Simulator.SimulatorBackend.PageSize,
            DirtyWorkingSetBytes = options.SimulatedWorkingSet,
            StatePath = Path.Combine(options.DataDir, SimulatorStateFile),
            StateWriteDelay = SimulatorStateWriteDelay,
            // Guests write a verifiable pattern to their disks when told to step (SimulatorBackend.RunWorkloadStepAsync).
            DiskProvider = disks,
            WorkloadFactory = _ => new Xapi.Xenops.Simulator.DiskPatternWorkload(),
            Logger = loggers.CreateLogger<Xapi.Xenops.Simulator.SimulatorBackend>(),
        },
        new Xapi.Xenops.Simulator.RealTimeClock(SimulatorTick));

    /// <summary>The SR types this build has drivers for.</summary>
    public static IReadOnlyList<Xapi.Storage.ISrDriver> StorageDrivers() =>
    [
        new Xapi.Storage.Drivers.Ext.ExtDriver(),
        new Xapi.Storage.Drivers.Nfs.NfsDriver(),
        new Xapi.Storage.Drivers.Lvm.LvmDriver(),
        new Xapi.Storage.Drivers.Iso.IsoDriver(),
        new Xapi.Storage.Drivers.Udev.UdevDriver(),
        new Xapi.Storage.Drivers.Dummy.DummyDriver(),
    ];

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        // Storage is plugged before clients are served, so none sees an SR half recovered.
        await _app.Services.GetRequiredService<StorageBoot>().PlugAllAsync(Database, cancellationToken);
        // Migrations a stop interrupted are settled first, so the reconciliation sees each guest on one host.
        await _app.Services.GetRequiredService<LiveMigration>().RecoverAsync(cancellationToken);
        // VMs show what the backend runs before any client looks.
        await _app.Services.GetRequiredService<VmRuntime>().StartAsync(cancellationToken);
        await _app.StartAsync(cancellationToken);
        _app.Services.GetRequiredService<NbdEndpoint>().Start(NbdCertificate);
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
            try
            {
                sessions.ExpireIdle();
                tasks.CollectFinished();
            }
            catch (Xapi.Database.Replication.ReplicaWriteException e)
            {
                // A member whose master is away: the next round tries again.
                logger.LogWarning("Could not collect idle sessions and finished tasks: {Reason}", e.Message);
            }
        }, null, CollectionInterval, CollectionInterval);
        logger.LogInformation("XenAPI {Major}.{Minor} listening on {Addresses} with data in {DataDir}",
            ApiSchema.ApiVersionMajor, ApiSchema.ApiVersionMinor, addresses, Path.GetFullPath(Options.DataDir));
        logger.LogInformation("Each listener holds up to {Connections} connections (descriptor limit {Descriptors}); idle ones close after {Idle}",
            ConnectionsPerListener, OpenFileLimit, Options.IdleConnectionTimeout);
    }

    // How often idle sessions and finished tasks are collected (real hosts' database GC: 30 s).
    private static readonly TimeSpan CollectionInterval = TimeSpan.FromSeconds(30);

    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    private static Uri ToClientUri(string address)
    {
        var uri = new Uri(address.Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal).Replace("[::]", "[::1]", StringComparison.Ordinal));
        return new Uri($"{uri.Scheme}://{uri.Host}:{uri.Port}/");
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        // Tests stop a daemon and leave the using block too: the second call finds the services gone.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        if (_sessionReaper is not null)
        {
            await _sessionReaper.DisposeAsync();
        }
        await _app.StopAsync();
        var succession = _app.Services.GetRequiredService<PoolMembership>().Succession;
        await _app.Services.GetRequiredService<VmRuntime>().DisposeAsync();
        await _app.Services.GetRequiredService<PoolMembership>().DisposeAsync();
        await _app.Services.GetRequiredService<NbdEndpoint>().DisposeAsync();
        await _app.Services.GetRequiredService<Xapi.Storage.Service.StorageManager>().DisposeAsync();
        await _app.DisposeAsync();
        Journal?.Dispose();
        Postgres?.Dispose();
        // A member's store, written through once it took the pool over.
        succession?.Dispose();
        // Last of the backend: nothing calls libxl once the runtime and the services are gone.
        Libxl?.Dispose();
        await _serilog.DisposeAsync();
    }
}
