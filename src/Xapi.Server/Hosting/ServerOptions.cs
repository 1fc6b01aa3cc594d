using Microsoft.Extensions.Configuration;

namespace Xapi.Server.Hosting;

/// <summary>
/// Daemon settings. Sources, later ones winning: built-in defaults, a JSON config file
/// (<c>--config FILE</c> or <c>XAPI_CONFIG</c>), <c>XAPI_*</c> environment variables, the command line.
/// </summary>
public sealed class ServerOptions
{
    public int HttpPort { get; set; } = 8080;

    /// <summary>0 turns HTTPS off; otherwise TLS with a self-signed certificate kept in the data dir.</summary>
    public int HttpsPort { get; set; }

    /// <summary>
    /// The local Unix-domain socket (real hosts: <c>/var/lib/xcp/xapi</c>); by default in the data
    /// dir, empty turns it off. A root peer logs in there without a password.
    /// </summary>
    public string? UnixSocket { get; set; }

    /// <summary>The socket path in force: the configured one, or the data dir's.</summary>
    public string UnixSocketPath => UnixSocket ?? Path.Combine(DataDir, "xapi.sock");

    /// <summary>Address to listen on; loopback-only deployments set 127.0.0.1.</summary>
    public string ListenAddress { get; set; } = "0.0.0.0";

    public string DataDir { get; set; } = "data";

    /// <summary>
    /// <c>journal</c> (default): durable in the data dir, every write fsynced before its reply;
    /// <c>memory</c>: nothing kept across restarts (tests, benchmarks' baseline).
    /// </summary>
    public string Database { get; set; } = "journal";

    /// <summary>The Npgsql connection string of the pool database, with <c>--database postgres</c>.</summary>
    public string? Postgres { get; set; }

    /// <summary>
    /// How long a write waits to become durable before its caller is told the database is
    /// unreachable (the write itself is kept and stored when the database returns).
    /// </summary>
    public TimeSpan DurabilityTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The journal is compacted into a snapshot once it grows past this many bytes.</summary>
    public long JournalCompactBytes { get; set; } = 64L << 20;

    /// <summary>The root password to set on first boot; generated and printed once when absent.</summary>
    public string? RootPassword { get; set; }

    public int MaxBodyBytes { get; set; } = 300 * 1024;

    /// <summary>
    /// Connections each listener (HTTP, HTTPS, local socket) holds at most; when full it stops
    /// accepting and new clients wait in the kernel's backlog. Real hosts hold 800 on TCP. Lowered
    /// at start so that all listeners fit in the process's descriptor limit.
    /// </summary>
    public int MaxConnections { get; set; } = 800;

    /// <summary>
    /// A connection that sends no request for this long is closed (real hosts: 10 s without a
    /// header byte), so idle connections give their place back.
    /// </summary>
    public TimeSpan IdleConnectionTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public int MaxNestingDepth { get; set; } = 64;

    /// <summary>
    /// A reply larger than this is streamed to the client as it is encoded (chunked) instead of
    /// being held whole, so no reply costs more memory than this, however large it is.
    /// </summary>
    public long MaxBufferedReplyBytes { get; set; } = 1 << 20;

    /// <summary>
    /// Largest database dump <c>PUT /pool/xmldbdump</c> accepts. The largest pool the product
    /// supports (64 hosts × 1,000 VMs, each with a VBD, VDI and VIF) is an 83 MiB dump; this is
    /// half as much again, and bounds what a restore holds in memory.
    /// </summary>
    public long MaxDumpBytes { get; set; } = 128L << 20;

    public TimeSpan SessionIdleTimeout { get; set; } = TimeSpan.FromHours(24);

    /// <summary>
    /// Sessions one originator (for root) or one user name may hold, as on real hosts; a login
    /// beyond it destroys the group's least recently active session without work in progress.
    /// </summary>
    public int MaxSessionsPerOriginator { get; set; } = 500;

    /// <summary>Root sessions opened without an originator, together (real hosts: 400).</summary>
    public int MaxSessionsWithoutOriginator { get; set; } = 400;

    /// <summary>How long a failed login waits before answering, to slow down guessing.</summary>
    public TimeSpan FailedLoginDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Password checks that may run at once (each takes tens of milliseconds of CPU); further
    /// logins wait their turn. Half the cores by default, so the other half keeps serving.
    /// </summary>
    public int MaxConcurrentPasswordChecks { get; set; } = Math.Max(1, Environment.ProcessorCount / 2);

    /// <summary>PBKDF2 iterations for the root password hash.</summary>
    public int PasswordHashIterations { get; set; } = 210_000;

    /// <summary>
    /// Async calls and <c>task.create</c> beyond this many pending async tasks plus tasks clients
    /// created (and have not destroyed) answer TOO_MANY_PENDING_TASKS.
    /// </summary>
    public int MaxPendingTasks { get; set; } = 1000;

    /// <summary>Characters of name and description that tasks clients created may hold together; beyond, TOO_MANY_PENDING_TASKS.</summary>
    public long ClientTaskTextLimit { get; set; } = 16L << 20;

    /// <summary>Finished tasks kept at most (real hosts: 200); the oldest go first, at the next collection.</summary>
    public int MaxFinishedTasks { get; set; } = 200;

    /// <summary>Alerts kept at most (real hosts: 10,000, <c>messages-limit</c>); a new one beyond it removes the oldest.</summary>
    public int MessageLimit { get; set; } = 10_000;

    /// <summary>Characters of name and body all alerts may hold together; a new one beyond it removes the oldest.</summary>
    public long MessageTextLimit { get; set; } = 64L << 20;

    /// <summary>How long finished tasks stay for clients to read before they are destroyed.</summary>
    public TimeSpan FinishedTaskRetention { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How many events an <c>event.register</c> client may fall behind before EVENTS_LOST.</summary>
    public int EventQueueLimit { get; set; } = 10_000;

    /// <summary>How many deletes the database remembers for event readers.</summary>
    public int TombstoneLimit { get; set; } = Xapi.Database.XapiDatabase.DefaultTombstoneLimit;

    public string? LogFile { get; set; }

    public const string SimulatorHypervisor = "simulator";
    public const string XenHypervisor = "xen";

    /// <summary>
    /// What runs the VMs: <c>simulator</c> (default; deterministic simulated domains) or <c>xen</c>
    /// (libxl in a Xen dom0; refused at start with one line when this machine cannot run it).
    /// </summary>
    public string Hypervisor { get; set; } = SimulatorHypervisor;

    /// <summary>The NBD server's port (10809 on real hosts); a negative value turns it off, 0 picks a free port.</summary>
    public int NbdPort { get; set; } = Xapi.Storage.Nbd.NbdServerOptions.StandardPort;

    /// <summary>Where first boot makes the local SR (an <c>ext</c> SR: qcow2 images); default <c>DATA_DIR/sr</c>.</summary>
    public string? LocalSrPath { get; set; }

    /// <summary>The directory first boot's ISO library SR serves; default <c>DATA_DIR/iso</c>.</summary>
    public string? IsoSrPath { get; set; }

    /// <summary>
    /// For one start after damage in the middle of the journal: keep every valid record (the daemon
    /// otherwise refuses to start); the damaged files are kept in <c>DATA_DIR/db/damaged-*</c>.
    /// </summary>
    public bool SalvageJournal { get; set; }

    public string LogLevel { get; set; } = "Information";

    /// <summary>Logged values longer than this are cut (with the count of characters left out).</summary>
    public int MaxLoggedValueLength { get; set; } = 256;

    /// <summary>Lines about unauthenticated failures (failed logins, unparseable requests) written per minute at most, per kind.</summary>
    public int UnauthenticatedLogLinesPerMinute { get; set; } = 60;

    /// <summary>The simulated host's memory, bytes (the simulator backend's whole RAM, dom0's share included).</summary>
    public long SimulatedHostMemory { get; set; } = 16L << 30;

    /// <summary>How long a simulated guest takes to boot far enough for its agent to report (VM_guest_metrics).</summary>
    public TimeSpan SimulatedGuestAgentDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a host that received a live-migrating guest keeps it paused without word from the
    /// sender; then the pool database decides whether the guest runs here or is dropped.
    /// </summary>
    public TimeSpan MigrationReceiverPatience { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Bytes per second a running simulated guest writes to its memory (what a live migration must send again), within <see cref="SimulatedWorkingSet"/>.</summary>
    public long SimulatedDirtyRate { get; set; } = 10L << 20;

    /// <summary>The simulated guest's memory it rewrites, bytes (its working set).</summary>
    public long SimulatedWorkingSet { get; set; } = 64L << 20;

    /// <summary>How long a simulated guest takes to act on a shutdown, reboot or suspend request.</summary>
    public TimeSpan SimulatedShutdownDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long VM.clean_shutdown and VM.clean_reboot wait for the guest to act on the request before
    /// failing with VM_SHUTDOWN_TIMEOUT, the domain left running (xapi.conf
    /// <c>domain_shutdown_total_timeout</c>, 1200 s). A TimeSpan: <c>00:00:20</c> is 20 seconds.
    /// </summary>
    public TimeSpan DomainShutdownTotalTimeout { get; set; } = TimeSpan.FromSeconds(1200);

    /// <summary>
    /// How long a pool member's start waits for its master to answer before it gives up (the
    /// service manager then starts it again). A TimeSpan.
    /// </summary>
    public TimeSpan PoolMasterPatience { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// How long the master waits to hear from a member before it marks it dead
    /// (<c>host_metrics.live</c>). Real hosts without HA take 600 s. A TimeSpan.
    /// </summary>
    public TimeSpan MemberLivenessTimeout { get; set; } = TimeSpan.FromSeconds(30);

    private static readonly Dictionary<string, string> SwitchMappings = new(StringComparer.OrdinalIgnoreCase)
    {
        ["--http-port"] = nameof(HttpPort),
        ["--https-port"] = nameof(HttpsPort),
        ["--unix-socket"] = nameof(UnixSocket),
        ["--listen"] = nameof(ListenAddress),
        ["--data-dir"] = nameof(DataDir),
        ["--database"] = nameof(Database),
        ["--postgres"] = nameof(Postgres),
        ["--root-password"] = nameof(RootPassword),
        ["--max-body-bytes"] = nameof(MaxBodyBytes),
        ["--max-connections"] = nameof(MaxConnections),
        ["--max-buffered-reply-bytes"] = nameof(MaxBufferedReplyBytes),
        ["--max-dump-bytes"] = nameof(MaxDumpBytes),
        ["--session-idle-timeout"] = nameof(SessionIdleTimeout),
        ["--failed-login-delay"] = nameof(FailedLoginDelay),
        ["--log-file"] = nameof(LogFile),
        ["--local-sr-path"] = nameof(LocalSrPath),
        ["--nbd-port"] = nameof(NbdPort),
        ["--iso-sr-path"] = nameof(IsoSrPath),
        ["--log-level"] = nameof(LogLevel),
        ["--salvage-journal"] = nameof(SalvageJournal),
        ["--sim-host-memory"] = nameof(SimulatedHostMemory),
        ["--sim-guest-agent-delay"] = nameof(SimulatedGuestAgentDelay),
        ["--sim-shutdown-delay"] = nameof(SimulatedShutdownDelay),
        ["--migration-patience"] = nameof(MigrationReceiverPatience),
        ["--sim-dirty-rate"] = nameof(SimulatedDirtyRate),
        ["--sim-working-set"] = nameof(SimulatedWorkingSet),
        ["--hypervisor"] = nameof(Hypervisor),
        ["--domain-shutdown-total-timeout"] = nameof(DomainShutdownTotalTimeout),
        ["--pool-master-patience"] = nameof(PoolMasterPatience),
        ["--member-liveness-timeout"] = nameof(MemberLivenessTimeout),
        ["--config"] = "Config",
    };

    // Switches that may be given bare, meaning true.
    private static readonly HashSet<string> Flags = new(StringComparer.OrdinalIgnoreCase) { "--salvage-journal" };

    public static ServerOptions Load(string[] args, IDictionary<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .ToDictionary(e => (string)e.Key, e => (string?)e.Value);

        args = [.. args.Select((arg, i) => Flags.Contains(arg) && (i + 1 == args.Length || args[i + 1].StartsWith('-')) ? arg + "=true" : arg)];
        var commandLine = new ConfigurationBuilder().AddCommandLine(args, SwitchMappings).Build();
        var envValues = environment
            .Where(kv => kv.Key.StartsWith("XAPI_", StringComparison.Ordinal))
            .ToDictionary(kv => EnvironmentKey(kv.Key), kv => kv.Value);

        var configFile = commandLine["Config"] ?? envValues.GetValueOrDefault("Config");
        var builder = new ConfigurationBuilder();
        if (configFile is not null)
        {
            if (!File.Exists(configFile))
            {
                throw new FileNotFoundException($"config file {configFile} does not exist", configFile);
            }
            builder.AddJsonFile(Path.GetFullPath(configFile), optional: false);
        }
        builder.AddInMemoryCollection(envValues);
        builder.AddConfiguration(commandLine);
        var options = new ServerOptions();
        try
        {
            builder.Build().Bind(options);
        }
        catch (InvalidDataException e)
        {
            // A config file that is not JSON: the inner exception says where.
            throw new FormatException($"config file {configFile} is not valid JSON ({e.InnerException?.Message ?? e.Message})", e);
        }
        options.Validate();
        return options;
    }

    /// <summary>Refuses settings the daemon could only fail on later, with the setting's name.</summary>
    public void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok)
            {
                throw new FormatException(message);
            }
        }
        Require(HttpPort is >= 0 and <= 65535, $"HttpPort {HttpPort} is not a port number");
        Require(HttpsPort is >= -1 and <= 65535, $"HttpsPort {HttpsPort} is not a port number");
        Require(System.Net.IPAddress.TryParse(ListenAddress, out _), $"ListenAddress '{ListenAddress}' is not an IP address");
        Require(DataDir.Length > 0, "DataDir is empty");
        Require(Database.ToLowerInvariant() is "journal" or "memory" or "postgres", $"unknown Database '{Database}': use journal, memory or postgres");
        Require(Hypervisor.ToLowerInvariant() is SimulatorHypervisor or XenHypervisor, $"unknown Hypervisor '{Hypervisor}': use {SimulatorHypervisor} or {XenHypervisor}");
        Require(!Database.Equals("postgres", StringComparison.OrdinalIgnoreCase) || !string.IsNullOrEmpty(Postgres), "--database postgres needs --postgres CONNECTION_STRING");
        Require(Enum.TryParse<Serilog.Events.LogEventLevel>(LogLevel, ignoreCase: true, out _), $"LogLevel '{LogLevel}' is not one of Verbose, Debug, Information, Warning, Error, Fatal");
        Require(MaxBodyBytes > 0 && MaxNestingDepth > 0 && MaxPendingTasks > 0 && EventQueueLimit > 0 && TombstoneLimit > 0 && JournalCompactBytes > 0,
            "MaxBodyBytes, MaxNestingDepth, MaxPendingTasks, EventQueueLimit, TombstoneLimit and JournalCompactBytes must be positive");
        Require(DurabilityTimeout > TimeSpan.Zero && SessionIdleTimeout > TimeSpan.Zero && FailedLoginDelay >= TimeSpan.Zero && FinishedTaskRetention >= TimeSpan.Zero,
            "DurabilityTimeout and SessionIdleTimeout must be positive, FailedLoginDelay and FinishedTaskRetention not negative");
        Require(PasswordHashIterations > 0, "PasswordHashIterations must be positive");
        Require(SimulatedHostMemory >= 2L << 30, "SimulatedHostMemory must be at least 2 GiB (the simulated host keeps 1 GiB for itself)");
        Require(SimulatedDirtyRate >= 0 && SimulatedWorkingSet >= 4096, "SimulatedDirtyRate must not be negative, and SimulatedWorkingSet must be at least a page (4096)");
        Require(SimulatedGuestAgentDelay >= TimeSpan.Zero && SimulatedShutdownDelay >= TimeSpan.Zero, "SimulatedGuestAgentDelay and SimulatedShutdownDelay must not be negative");
        Require(DomainShutdownTotalTimeout > TimeSpan.Zero, "DomainShutdownTotalTimeout must be positive");
        Require(PoolMasterPatience >= TimeSpan.Zero, "PoolMasterPatience must not be negative");
        Require(MemberLivenessTimeout > TimeSpan.Zero, "MemberLivenessTimeout must be positive");
        Require(MigrationReceiverPatience > TimeSpan.Zero, "MigrationReceiverPatience must be positive");
    }

    // XAPI_HTTP_PORT -> HttpPort, XAPI_ROOT_PASSWORD -> RootPassword
    private static string EnvironmentKey(string variable) =>
        string.Concat(variable["XAPI_".Length..].Split('_', StringSplitOptions.RemoveEmptyEntries)
            .Select(part => char.ToUpperInvariant(part[0]) + part[1..].ToLowerInvariant()));
}
