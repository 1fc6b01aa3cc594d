using System.Collections.Concurrent;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// Eight clients write while the daemon is killed with SIGKILL at a random moment; after a
/// restart every acknowledged write is there, no transaction is half there, and event.from
/// with a token from before the crash still works.
/// </summary>
[Category("Crash")]
public class CrashTests
{
    private const string Password = "crash-password";
    private const int Clients = 8;

    private sealed class ClientLog
    {
        public string Vm = "";
        public long AcknowledgedSeq = -1;
        public long AttemptedSeq = -1;
        public readonly List<string> KeptMessages = [];
        public readonly List<string> DestroyedMessages = [];
        public List<string>? InFlightDestroy;
    }

    [TestCase(1, "journal")]
    [TestCase(2, "journal")]
    [TestCase(3, "journal")]
    [TestCase(4, "journal")]
    [TestCase(5, "journal")]
    [TestCase(6, "postgres")]
    [TestCase(7, "postgres")]
    [TestCase(8, "postgres")]
    [TestCase(9, "postgres")]
    [TestCase(10, "postgres")]
    public async Task Acknowledged_writes_survive_sigkill(int seed, string backend)
    {
        await using var cluster = backend == "postgres" ? await Xapi.Server.Tests.PostgresCluster.StartAsync() : null;
        string[] backendArgs = cluster is null ? [] : ["--database", "postgres", "--postgres", await cluster.CreateDatabaseAsync()];
        var random = new Random(seed * 7919);
        var killAfter = TimeSpan.FromSeconds(1 + random.NextDouble() * 19);
        var dataDir = Directory.CreateTempSubdirectory("xapi-crash-").FullName;
        var logs = Enumerable.Range(0, Clients).Select(_ => new ClientLog()).ToArray();
        string preCrashToken;
        try
        {
            using (var daemon = await DaemonProcess.StartAsync(dataDir, Password, backendArgs))
            {
                using var watcher = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2);
                await watcher.LoginAsync("root", Password);
                preCrashToken = (string)((IReadOnlyDictionary<string, object?>)(await watcher.InvokeAsync("event.from", new[] { "VM", "message" }, "", 0.0))!)["token"]!;
                var pool = ((IReadOnlyList<object?>)(await watcher.InvokeAsync("pool.get_all"))!)[0];
                var poolUuid = (string)(await watcher.InvokeAsync("pool.get_uuid", pool))!;

                var writers = logs.Select((log, index) => Task.Run(() => WriteUntilKilledAsync(daemon.Uri, log, index, poolUuid))).ToArray();
                await Task.Delay(killAfter);
                daemon.Kill();
                await Task.WhenAll(writers);
            }

            using var restarted = await DaemonProcess.StartAsync(dataDir, Password, backendArgs);
            using var client = new XenApiClient(restarted.Uri, RpcDialect.JsonRpcV2);
            await client.LoginAsync("root", Password);
            var acknowledged = logs.Sum(l => l.AcknowledgedSeq + 1);
            TestContext.Out.WriteLine($"{backend}: killed after {killAfter.TotalSeconds:0.0} s; {acknowledged} acknowledged renames, {logs.Sum(l => l.KeptMessages.Count)} kept and {logs.Sum(l => l.DestroyedMessages.Count)} destroyed alerts");

            var messages = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("message.get_all_records"))!;
            foreach (var log in logs.Where(l => l.Vm.Length > 0))
            {
                var name = (string)(await client.InvokeAsync("VM.get_name_label", log.Vm))!;
                var seq = long.Parse(name.Split('-')[^1]);
                Assert.That(seq, Is.InRange(log.AcknowledgedSeq, log.AttemptedSeq), "the last acknowledged rename (or the one in flight) is there");
                var inFlight = log.InFlightDestroy ?? [];
                Assert.That(log.KeptMessages.Except(inFlight).Where(m => !messages.ContainsKey(m)), Is.Empty, "acknowledged alerts are there");
                Assert.That(log.DestroyedMessages.Where(messages.ContainsKey), Is.Empty, "acknowledged destroys are there");
                var present = inFlight.Count(messages.ContainsKey);
                Assert.That(present, Is.EqualTo(0).Or.EqualTo(inFlight.Count), "a destroy_many in flight is applied whole or not at all");
            }

            var batch = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("event.from", new[] { "VM", "message" }, preCrashToken, 1.0))!;
            var events = ((IReadOnlyList<object?>)batch["events"]!).Cast<IReadOnlyDictionary<string, object?>>().ToList();
            var renamedVms = events.Where(e => (string)e["class"]! == "vm").Select(e => (string)e["ref"]!).ToHashSet();
            Assert.That(logs.Where(l => l.AcknowledgedSeq >= 0).Select(l => l.Vm), Is.SubsetOf(renamedVms), "a pre-crash token sees what changed since it");
            Assert.That((string)batch["token"]!, Does.Match(@"^\d{20},\d{20}$"));
        }
        finally
        {
            Directory.Delete(dataDir, recursive: true);
        }
    }

    private static async Task WriteUntilKilledAsync(Uri uri, ClientLog log, int index, string poolUuid)
    {
        using var client = new XenApiClient(uri, RpcDialect.JsonRpcV2);
        try
        {
            await client.LoginAsync("root", Password);
            var record = ApiSchema.Class("VM").MinimalRecord();
            record["name_label"] = $"client{index}-start";
            log.Vm = (string)(await client.InvokeAsync("VM.create", record))!;
            for (long seq = 0; ; seq++)
            {
                log.AttemptedSeq = seq;
                await client.InvokeAsync("VM.set_name_label", log.Vm, $"client{index}-{seq}");
                log.AcknowledgedSeq = seq;
                if (seq % 10 == 9)
                {
                    var created = new List<string>();
                    for (var i = 0; i < 3; i++)
                    {
                        created.Add((string)(await client.InvokeAsync("message.create", "CRASH_TEST", 1L, "Pool", poolUuid, $"{index}-{seq}-{i}"))!);
                        log.KeptMessages.Add(created[^1]);
                    }
                    log.InFlightDestroy = created;
                    await client.InvokeAsync("message.destroy_many", (object)created.ToArray());
                    log.InFlightDestroy = null;
                    log.KeptMessages.RemoveAll(created.Contains);
                    log.DestroyedMessages.AddRange(created);
                }
            }
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            // The daemon was killed under us: whatever was not acknowledged is in flight.
        }
    }
}
