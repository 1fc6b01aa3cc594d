using System.Text.Json;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Pool;
using Xapi.Server.Tests;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// VM.pool_migrate between two daemon processes (master 127.0.0.2, member 127.0.0.3) on a shared
/// SR, with the member SIGKILLed at each step of the hand-over, as sender or as receiver. Once the
/// member is back and the pool has settled, exactly one host has a domain for the VM, running,
/// and it is the host the pool database names; no migration is left in flight.
/// </summary>
public class LiveMigrationKillTests
{
    private const string Password = "migrate-kill";
    private const string SimulatorState = "xenops-simulator.json";

    public sealed record Crash(string Point, bool MemberSends, bool EndsOnMember)
    {
        public override string ToString() => Point;
    }

    public static IEnumerable<Crash> Crashes() =>
    [
        // The member sent the whole guest and died before handing it over: the guest stays its own.
        new(LiveMigration.CrashWhenSent, MemberSends: true, EndsOnMember: true),
        // The member handed the VM over and died before destroying its domain or telling the master.
        new(LiveMigration.CrashWhenHandedOver, MemberSends: true, EndsOnMember: false),
        // The member, receiving, died with the guest ready: nothing was handed over.
        new(LiveMigration.CrashWhenReady, MemberSends: false, EndsOnMember: false),
    ];

    private static Task<DaemonProcess> StartAsync(string dataDir, string address, int port, IReadOnlyDictionary<string, string> environment) =>
        DaemonProcess.StartAsync(dataDir, Password, environment, "--listen", address, "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--migration-patience", "00:00:02", "--sim-guest-agent-delay", "0");

    [TestCaseSource(nameof(Crashes))]
    public async Task After_a_host_dies_mid_migration_exactly_one_host_runs_the_guest(Crash crash)
    {
        var port = TestPool.FreePortOnAll(2);
        var masterDir = Directory.CreateTempSubdirectory("xapi-migrate-master-").FullName;
        var memberDir = Directory.CreateTempSubdirectory("xapi-migrate-member-").FullName;
        var sharedDir = Directory.CreateTempSubdirectory("xapi-migrate-shared-").FullName;
        using var cleanMaster = new DirectoryCleanup(masterDir);
        using var cleanMember = new DirectoryCleanup(memberDir);
        using var cleanShared = new DirectoryCleanup(sharedDir);
        var master = await StartAsync(masterDir, "127.0.0.2", port, new Dictionary<string, string>());
        var member = await StartAsync(memberDir, "127.0.0.3", port, new Dictionary<string, string> { [Xapi.Storage.CrashPoints.Variable] = crash.Point });
        try
        {
            using (var joining = new XenApiClient(new Uri($"http://127.0.0.3:{port}/")))
            {
                await joining.LoginAsync("root", Password);
                await joining.InvokeAsync("pool.join", "127.0.0.2", "root", Password);
            }
            using var client = new XenApiClient(new Uri($"http://127.0.0.2:{port}/"));
            await client.LoginAsync("root", Password);
            var hosts = await HostsByAddressAsync(client);
            var sr = (string)(await client.InvokeAsync("SR.create", hosts["127.0.0.2"], new Dictionary<string, object?> { ["location"] = sharedDir },
                "0", "shared", "", "ext", "user", true, new Dictionary<string, object?>()))!;
            var vm = await VmAsync(client, sr);
            var uuid = (string)(await client.InvokeAsync("VM.get_uuid", vm))!;
            var (from, to) = crash.MemberSends ? ("127.0.0.3", "127.0.0.2") : ("127.0.0.2", "127.0.0.3");
            await client.InvokeAsync("VM.start_on", vm, hosts[from], false, false);

            try
            {
                await client.InvokeAsync("VM.pool_migrate", vm, hosts[to], new Dictionary<string, object?>());
            }
            catch (XenApiException e)
            {
                TestContext.Out.WriteLine($"VM.pool_migrate: {e.Code} [{string.Join(", ", e.Parameters)}]");
            }
            Assert.That(await member.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(137), "the member died at " + crash.Point);
            member.Dispose();
            member = await StartAsync(memberDir, "127.0.0.3", port, new Dictionary<string, string>());
            // The member settles its note as it starts; the master, receiving, its guest once its patience with the silent sender ends.
            await member.WaitForLineAsync("Settled an interrupted migration", TimeSpan.FromSeconds(60));
            if (crash.MemberSends)
            {
                await master.WaitForLineAsync("settled by the database", TimeSpan.FromSeconds(60));
            }

            var owner = crash.EndsOnMember ? hosts["127.0.0.3"] : hosts["127.0.0.2"];
            await UntilAsync(client, vm, r => (string?)r["resident_on"] == owner && (string?)r["power_state"] == "Running");
            // Both stopped in order: their simulators write what they run.
            await member.TerminateAsync(TimeSpan.FromSeconds(60));
            await master.TerminateAsync(TimeSpan.FromSeconds(60));

            var running = new[] { ("127.0.0.2", masterDir), ("127.0.0.3", memberDir) }
                .Where(h => DomainPower(Path.Combine(h.Item2, SimulatorState), uuid) is not null)
                .Select(h => (Host: h.Item1, Power: DomainPower(Path.Combine(h.Item2, SimulatorState), uuid)))
                .ToList();
            Assert.Multiple(() =>
            {
                Assert.That(running.Select(r => r.Host), Is.EqualTo(new[] { crash.EndsOnMember ? "127.0.0.3" : "127.0.0.2" }), "one host has the guest's domain");
                Assert.That(running.Select(r => r.Power), Is.All.EqualTo("Running"));
                Assert.That(Notes(masterDir).Concat(Notes(memberDir)), Is.Empty, "no migration left in flight");
            });
        }
        finally
        {
            member.Dispose();
            master.Dispose();
        }
    }

    /// <summary>A PV VM of 256 MiB with a 4 MiB disk on <paramref name="sr"/>.</summary>
    private static async Task<string> VmAsync(XenApiClient client, string sr)
    {
        const long MiB = 1L << 20;
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "moving";
        record["memory_static_min"] = record["memory_dynamic_min"] = record["memory_dynamic_max"] = record["memory_static_max"] = (256 * MiB).ToString();
        record["VCPUs_max"] = record["VCPUs_at_startup"] = "1";
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        var disk = ApiSchema.Class("VDI").MinimalRecord();
        disk["name_label"] = "moving disk";
        disk["SR"] = sr;
        disk["virtual_size"] = (4 * MiB).ToString();
        var vbd = ApiSchema.Class("VBD").MinimalRecord();
        vbd["VM"] = vm;
        vbd["VDI"] = (string)(await client.InvokeAsync("VDI.create", disk))!;
        vbd["userdevice"] = "0";
        vbd["type"] = "Disk";
        vbd["mode"] = "RW";
        await client.InvokeAsync("VBD.create", vbd);
        return vm;
    }

    private static async Task<Dictionary<string, string>> HostsByAddressAsync(XenApiClient client)
    {
        var records = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("host.get_all_records"))!;
        return records.ToDictionary(r => (string)((IReadOnlyDictionary<string, object?>)r.Value!)["address"]!, r => r.Key);
    }

    /// <summary>Follows the VM through the master's event.from until <paramref name="until"/> holds.</summary>
    private static async Task UntilAsync(XenApiClient client, string vm, Func<IReadOnlyDictionary<string, object?>, bool> until)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var token = "";
        while (!until((IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_record", vm))!))
        {
            limit.Token.ThrowIfCancellationRequested();
            var batch = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("event.from", new object?[] { "VM" }, token, 5.0))!;
            token = (string)batch["token"]!;
        }
    }

    /// <summary>The power state the simulator's state file records for the VM's domain, or null for none.</summary>
    private static string? DomainPower(string stateFile, string uuid)
    {
        if (!File.Exists(stateFile))
        {
            return null;
        }
        using var state = JsonDocument.Parse(File.ReadAllBytes(stateFile));
        foreach (var domain in state.RootElement.GetProperty("Domains").EnumerateArray())
        {
            if (domain.GetProperty("Config").GetProperty("Uuid").GetString() == uuid)
            {
                var power = domain.GetProperty("Power");
                return power.ValueKind == JsonValueKind.Number ? ((Xapi.Xenops.DomainPowerState)power.GetInt32()).ToString() : power.GetString();
            }
        }
        return null;
    }

    private static IEnumerable<string> Notes(string dataDir) =>
        Directory.Exists(Path.Combine(dataDir, "migrations")) ? Directory.EnumerateFiles(Path.Combine(dataDir, "migrations")) : [];
}
