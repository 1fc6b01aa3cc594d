using System.Diagnostics;
using Xapi.Protocol;

// The lvm SR through the published daemon, in a guest with a real device-mapper: the program
// starts the daemon (its embedded journal database in DATA_DIR, listening on 127.0.0.1), logs
// in as root and drives an lvm SR on DEVICE (an empty virtio disk) over the XenAPI wire and the
// HTTP data path. Each check prints
//   SCENARIO <name> PASS|FAIL <detail>
// and the run ends with SCENARIO-END; the exit status is the number of failed checks.
// Checks run in order and later ones use what earlier ones made, so the first failure that
// leaves nothing to work on stops the run (reported as FAIL of that check, or "unexpected").

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: Xapi.Storage.LvmScenario DEVICE DAEMON_DLL DATA_DIR");
    return 2;
}
var (device, daemonDll, dataDir) = (args[0], args[1], args[2]);
const int Port = 8080;
var password = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));
var clock = Stopwatch.StartNew();
var report = new Report(clock);
var daemon = GuestDaemon.Start(daemonDll, dataDir, Port, password);
try
{
    await daemon.WaitUntilListeningAsync(TimeSpan.FromSeconds(150));
    report.Check("daemon-start", true, $"listening on {daemon.Uri}");
    // An import the daemon refuses is answered before its body is sent (Expect: 100-continue);
    // under emulation the answer can take longer than the client's default second of waiting.
    using var http = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(60) })
    {
        BaseAddress = daemon.Uri,
        Timeout = TimeSpan.FromSeconds(90),
    };
    using var client = new XenApiClient(daemon.Uri, RpcDialect.XmlRpc, http);
    await client.LoginAsync("root", password);
    report.Check("login", client.Session?.StartsWith("OpaqueRef:", StringComparison.Ordinal) == true, "root with the password given on the command line");
    await new Scenario(new Wire(client, http), report, device).RunAsync();
    await client.LogoutAsync();
}
catch (Exception e)
{
    report.Check("unexpected", false, $"{e.GetType().Name}: {e.Message}");
}
finally
{
    var peak = daemon.PeakMemory();
    var status = await daemon.StopAsync(TimeSpan.FromSeconds(30));
    report.Check("daemon-stop", status == 0, $"exit status after SIGTERM: {status?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none (killed after 30 s)"}; peak resident memory {peak}");
    if (report.Failures > 0)
    {
        // What the daemon said last is what explains a failure.
        foreach (var line in daemon.Lines.TakeLast(60))
        {
            Console.WriteLine($"DAEMON {line}");
        }
    }
    await daemon.DisposeAsync();
}
Console.WriteLine("SCENARIO-END");
return report.Failures;

/// <summary>One SCENARIO line per check, with the time since the program started.</summary>
internal sealed class Report(Stopwatch clock)
{
    public int Failures { get; private set; }

    public void Check(string name, bool pass, string detail)
    {
        if (!pass)
        {
            Failures++;
        }
        var clean = detail.Replace('\n', ' ').Replace('\r', ' ').Replace("\t", "", StringComparison.Ordinal);
        Console.WriteLine($"SCENARIO {name} {(pass ? "PASS" : "FAIL")} {clean} t={clock.Elapsed.TotalSeconds:F1}s");
    }
}
