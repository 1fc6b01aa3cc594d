using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Database;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Hosting;

/// <summary>
/// Durable writes per second (VM.set_name_label over JSON-RPC on loopback) from 1, 8 and 64
/// clients with the journal, beside the same load with durability off; and the start-up time
/// of a 64-host pool with 1,000 VMs per host.
/// </summary>
internal static class Durability
{
    public static async Task RunAsync(double seconds)
    {
        // PostgreSQL is measured when a server is given (a fresh, empty database is best).
        var postgres = Environment.GetEnvironmentVariable("XAPI_BENCH_POSTGRES");
        Console.WriteLine($"durable writes: VM.set_name_label over JSON-RPC, loopback, {seconds:0.#} s per case, {Environment.ProcessorCount} cores");
        Console.WriteLine($"{"clients",8} {"memory w/s",12} {"journal w/s",12} {"ratio",7}{(postgres is null ? "" : $" {"postgres w/s",13} {"ratio",7}")}");
        foreach (var clients in new[] { 1, 8, 64 })
        {
            var memory = await WritesPerSecondAsync("memory", clients, seconds);
            var journal = await WritesPerSecondAsync("journal", clients, seconds);
            var line = $"{clients,8} {memory,12:N0} {journal,12:N0} {journal / memory,7:0.00}";
            if (postgres is not null)
            {
                var pg = await WritesPerSecondAsync("postgres", clients, seconds, postgres);
                line += $" {pg,13:N0} {pg / memory,7:0.00}";
            }
            Console.WriteLine(line);
        }
        await StartupAsync(postgres);
    }

    private static async Task<double> WritesPerSecondAsync(string backend, int clients, double seconds, string? postgres = null)
    {
        await using var bench = await BenchDaemon.StartAsync(backend, postgres);
        var daemon = bench.Host;
        using var http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = Timeout.InfiniteTimeSpan });
        var vmClass = ApiSchema.Class("VM");
        var sessions = new List<(XenApiClient Client, string Vm)>();
        for (var i = 0; i < clients; i++)
        {
            var client = new XenApiClient(daemon.HttpUri, RpcDialect.JsonRpcV2, http);
            await client.LoginAsync("root", BenchDaemon.Password);
            var record = vmClass.MinimalRecord();
            record["name_label"] = $"writer-{i}";
            sessions.Add((client, (string)(await client.InvokeAsync("VM.create", record))!));
        }
        async Task<long> RunAsync(TimeSpan duration)
        {
            long writes = 0;
            var watch = Stopwatch.StartNew();
            await Task.WhenAll(sessions.Select(async (s, i) =>
            {
                for (var seq = 0; watch.Elapsed < duration; seq++)
                {
                    await s.Client.InvokeAsync("VM.set_name_label", s.Vm, $"w{i}-{seq}");
                    Interlocked.Increment(ref writes);
                }
            }));
            return writes;
        }
        await RunAsync(TimeSpan.FromSeconds(1));
        var measured = Stopwatch.StartNew();
        var count = await RunAsync(TimeSpan.FromSeconds(seconds));
        foreach (var (client, _) in sessions)
        {
            client.Dispose();
        }
        return count / measured.Elapsed.TotalSeconds;
    }

    private static async Task StartupAsync(string? postgres)
    {
        const int Hosts = 64;
        const int VmsPerHost = 1000;
        var dir = Directory.CreateTempSubdirectory("xapi-bench-startup-").FullName;
        try
        {
            var build = Stopwatch.StartNew();
            var db = new XapiDatabase();
            var store = JournalStore.Open(db, dir, NullLogger.Instance);
            Populate(db, Hosts, VmsPerHost);
            await db.WhenVisibleAsync(db.CommittedGeneration);
            var rows = ApiSchema.Classes.Sum(cls => db.Snapshot.Count(cls));
            store.Dispose();
            var snapshotBytes = new FileInfo(Path.Combine(dir, JournalStore.SnapshotFile)).Length;
            Console.WriteLine($"start-up: {Hosts} hosts x {VmsPerHost} VMs with a VBD, VDI and VIF each: {rows:N0} rows, snapshot {snapshotBytes / 1048576.0:0.0} MiB (built in {build.Elapsed.TotalSeconds:0.0} s)");

            for (var run = 0; run < 3; run++)
            {
                GC.Collect();
                var watch = Stopwatch.StartNew();
                var loaded = new XapiDatabase();
                using var reopened = JournalStore.Open(loaded, dir, NullLogger.Instance);
                var elapsed = watch.Elapsed;
                Console.WriteLine($"  load {run + 1}: {elapsed.TotalSeconds:0.00} s ({ApiSchema.Classes.Sum(cls => loaded.Snapshot.Count(cls)):N0} rows), managed heap {GC.GetTotalMemory(false) / 1048576.0:0} MiB");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        if (postgres is not null)
        {
            await PostgresStartupAsync(postgres, Hosts, VmsPerHost);
        }
    }

    private static void Populate(XapiDatabase db, int hosts, int vmsPerHost)
    {
        Classes c = new();
        var sr = db.Write(tx => tx.Create(c.Sr, new Dictionary<string, object?> { ["name_label"] = "Local storage", ["type"] = "ext" })).Ref;
        var network = db.Write(tx => tx.Create(c.Network, new Dictionary<string, object?> { ["name_label"] = "Pool-wide network", ["bridge"] = "xenbr0" })).Ref;
        for (var h = 0; h < hosts; h++)
        {
            var host = db.Write(tx => tx.Create(c.Host, new Dictionary<string, object?> { ["name_label"] = $"host-{h}", ["hostname"] = $"host-{h}" })).Ref;
            for (var batch = 0; batch < vmsPerHost; batch += 250)
            {
                db.Write(tx =>
                {
                    for (var v = batch; v < batch + 250; v++)
                    {
                        var vm = tx.Create(c.Vm, new Dictionary<string, object?>
                        {
                            ["name_label"] = $"vm-{h}-{v}",
                            ["resident_on"] = host,
                            ["power_state"] = "Running",
                            ["memory_static_max"] = 2L << 30,
                            ["VCPUs_max"] = 2L,
                            ["other_config"] = ValueMap.FromPairs([new("owner", $"team-{v % 17}")]),
                        }).Ref;
                        var vdi = tx.Create(c.Vdi, new Dictionary<string, object?> { ["name_label"] = $"disk-{h}-{v}", ["SR"] = sr, ["virtual_size"] = 10L << 30 }).Ref;
                        tx.Create(c.Vbd, new Dictionary<string, object?> { ["VM"] = vm, ["VDI"] = vdi, ["device"] = "xvda", ["userdevice"] = "0" });
                        tx.Create(c.Vif, new Dictionary<string, object?> { ["VM"] = vm, ["network"] = network, ["device"] = "0", ["MAC"] = $"02:00:{h:x2}:{v >> 8:x2}:{v & 0xff:x2}:01" });
                    }
                });
            }
        }
    }

    private static async Task PostgresStartupAsync(string connectionString, int hosts, int vmsPerHost)
    {
        var name = "xapi_bench_" + Guid.NewGuid().ToString("N")[..8];
        await using (var admin = new Npgsql.NpgsqlConnection(connectionString))
        {
            await admin.OpenAsync();
            await using var create = new Npgsql.NpgsqlCommand($"CREATE DATABASE {name}", admin);
            await create.ExecuteNonQueryAsync();
        }
        var database = new Npgsql.NpgsqlConnectionStringBuilder(connectionString) { Database = name }.ConnectionString;
        var build = Stopwatch.StartNew();
        var db = new XapiDatabase();
        using (var store = await Xapi.Database.Postgres.PostgresStore.OpenAsync(db, database, NullLogger.Instance))
        {
            Populate(db, hosts, vmsPerHost);
            await db.WhenVisibleAsync(db.CommittedGeneration);
        }
        Console.WriteLine($"start-up from PostgreSQL: {hosts} hosts x {vmsPerHost} VMs (written through in {build.Elapsed.TotalSeconds:0.0} s)");
        for (var run = 0; run < 3; run++)
        {
            GC.Collect();
            var watch = Stopwatch.StartNew();
            var loaded = new XapiDatabase();
            using var reopened = await Xapi.Database.Postgres.PostgresStore.OpenAsync(loaded, database, NullLogger.Instance);
            Console.WriteLine($"  load {run + 1}: {watch.Elapsed.TotalSeconds:0.00} s ({reopened.LoadedRows:N0} rows)");
        }
    }

    private sealed class Classes
    {
        public ClassMeta Host { get; } = ApiSchema.Class("host");
        public ClassMeta Vm { get; } = ApiSchema.Class("VM");
        public ClassMeta Vbd { get; } = ApiSchema.Class("VBD");
        public ClassMeta Vdi { get; } = ApiSchema.Class("VDI");
        public ClassMeta Vif { get; } = ApiSchema.Class("VIF");
        public ClassMeta Sr { get; } = ApiSchema.Class("SR");
        public ClassMeta Network { get; } = ApiSchema.Class("network");
    }
}
