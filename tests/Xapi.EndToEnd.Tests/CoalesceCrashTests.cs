using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Xapi.Protocol;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// The ext SR's collector survives SIGKILL at every step. A chain with distinct data in every
/// layer is built through the API (A written, snapshotted, written again, three times), then a
/// snapshot is deleted so the collector must coalesce, and the daemon kills itself at a named
/// point (<c>XAPI_CRASH_AT</c>). After a restart the collector finishes, every remaining VDI
/// exports the bytes it had, and the SR's files, records and sizes agree; deleting the rest then
/// collapses the chain into A alone.
/// </summary>
/// <remarks>
/// The chain (parents on the left): B1 ← {B2, S1}, B2 ← {B3, S2}, B3 ← {A, S3}. Deleting S1
/// makes B2 the only child of B1 (a non-leaf coalesce with two children to relink); deleting S3
/// makes A the only child of B3 (a leaf coalesce). Budget: the whole fixture in 3 minutes.
/// </remarks>
[Explicit]
[Category("Slow")]
[NonParallelizable]
public class CoalesceCrashTests
{
    private const string Password = "coalesce-password";
    private const long DiskSize = 32L << 20;
    private const int Chunk = 4 << 20;
    private const int SigKill = 128 + 9;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private static readonly Stopwatch FixtureClock = new();

    private string _root = "";
    private string _dataDir = "";
    private string _pristine = "";
    private Chain _chain = null!;

    /// <summary>What the built chain holds: uuids by name (A, S1..S3, B1..B3) and each visible VDI's sha256.</summary>
    private sealed record Chain(string SrUuid, Dictionary<string, string> Uuid, Dictionary<string, string> Ref, Dictionary<string, string> Sha);

    public sealed record Case(string Point, string Trigger, string JournalKind, string JournalSubject, string[] Gone, bool RollsForward)
    {
        public override string ToString() => Point;
    }

    public static IEnumerable<Case> Cases() =>
    [
        new("coalesce.journalled", "S1", "coalesce", "B2", ["S1", "B2"], false),
        new("coalesce.committed", "S1", "coalesce", "B2", ["S1", "B2"], false),
        new("coalesce.relinked-one", "S1", "coalesce", "B2", ["S1", "B2"], false),
        new("leaf.journalled", "S3", "leaf", "A", ["S3", "B3"], false),
        new("leaf.committed", "S3", "leaf", "A", ["S3", "B3"], false),
        new("leaf.renamed", "S3", "leaf", "A", ["S3", "B3"], false),
        new("snapshot.linked", "snapshot", "snapshot", "A", [], false),
        new("snapshot.source-replaced", "snapshot", "snapshot", "A", [], true),
    ];

    private string SrDirectory => Path.Combine(_dataDir, "sr", _chain.SrUuid);

    private string PristineSrDirectory => Path.Combine(_pristine, "sr", _chain.SrUuid);

    [OneTimeSetUp]
    public async Task BuildTheChainOnceAsync()
    {
        FixtureClock.Restart();
        // Short: the data path's Unix sockets live under the data directory, within 107 bytes.
        _root = Directory.CreateTempSubdirectory("xgc").FullName;
        // Every case runs in the same directory (the SR's path is recorded at first boot), restored from this copy.
        _dataDir = Path.Combine(_root, "d");
        _pristine = Path.Combine(_root, "p");
        using var daemon = await DaemonProcess.StartAsync(_dataDir, Password);
        using var client = new XenApiClient(daemon.Uri);
        await client.LoginAsync("root", Password);
        var sr = await DefaultSrAsync(client);
        var uuid = new Dictionary<string, string>();
        var refs = new Dictionary<string, string>();
        var sha = new Dictionary<string, string>();
        refs["A"] = await CreateVdiAsync(client, sr, DiskSize);

        // Each layer overwrites part of the last: random data, 4 MiB runs of zeros (written as
        // zero clusters, which hide the data below them), and a partial cluster at the end.
        var model = new byte[DiskSize];
        var random = new Random(9);
        byte[] Layer(string shape, int tail)
        {
            var body = new byte[shape.Length * Chunk + tail];
            for (var i = 0; i < shape.Length; i++)
            {
                if (shape[i] == 'r')
                {
                    random.NextBytes(body.AsSpan(i * Chunk, Chunk));
                }
            }
            random.NextBytes(body.AsSpan(shape.Length * Chunk, tail));
            return body;
        }
        byte[][] layers = [Layer("rrr", 0), Layer("0r", 100_000), Layer("r0rr", 300_000), Layer("r00rr", 0)];
        for (var i = 0; i < layers.Length; i++)
        {
            try
            {
                await ImportAsync(daemon.Uri, client, refs["A"], layers[i]);
            }
            catch (Exception)
            {
                TestContext.Progress.WriteLine($"layer {i}:\n" + string.Join("\n", daemon.Output.TakeLast(40)));
                throw;
            }
            layers[i].CopyTo(model, 0);
            if (i < layers.Length - 1)
            {
                var name = $"S{i + 1}";
                refs[name] = (string)(await client.InvokeAsync("VDI.snapshot", refs["A"], new Dictionary<string, object?>()))!;
                sha[name] = Convert.ToHexString(SHA256.HashData(model));
            }
        }
        sha["A"] = Convert.ToHexString(SHA256.HashData(model));
        await client.InvokeAsync("SR.scan", sr);

        foreach (var (name, reference) in refs)
        {
            uuid[name] = (string)(await client.InvokeAsync("VDI.get_uuid", reference))!;
            Assert.That(await ExportShaAsync(daemon.Uri, client, reference), Is.EqualTo(sha[name]), $"{name} exports what was written into it");
        }
        var parents = (await VdiRecordsAsync(client, sr)).ToDictionary(r => r.Uuid, r => r.Parent);
        uuid["B3"] = parents[uuid["A"]]!;
        uuid["B2"] = parents[uuid["B3"]]!;
        uuid["B1"] = parents[uuid["B2"]]!;
        Assert.Multiple(() =>
        {
            Assert.That(parents[uuid["S3"]], Is.EqualTo(uuid["B3"]));
            Assert.That(parents[uuid["S2"]], Is.EqualTo(uuid["B2"]));
            Assert.That(parents[uuid["S1"]], Is.EqualTo(uuid["B1"]));
            Assert.That(parents[uuid["B1"]], Is.Null);
            Assert.That(parents, Has.Count.EqualTo(7));
        });
        _chain = new Chain((string)(await client.InvokeAsync("SR.get_uuid", sr))!, uuid, refs, sha);
        daemon.Kill();
        await RunAsync("cp", "-a", _dataDir, _pristine);
        TestContext.Out.WriteLine($"chain built in {FixtureClock.Elapsed.TotalSeconds:0.0} s");
    }

    [OneTimeTearDown]
    public void RemoveTheDataAndCheckTheBudget()
    {
        if (_root.Length > 0)
        {
            Directory.Delete(_root, recursive: true);
        }
        TestContext.Out.WriteLine($"fixture took {FixtureClock.Elapsed.TotalSeconds:0.0} s");
        Assert.That(FixtureClock.Elapsed, Is.LessThan(TimeSpan.FromMinutes(3)), "the whole file stays within its budget");
    }

    [TestCaseSource(nameof(Cases))]
    public async Task Every_vdi_keeps_its_bytes_when_the_daemon_dies_at(Case crash)
    {
        var clock = Stopwatch.StartNew();
        await RestoreAsync();
        var uuid = _chain.Uuid;

        using (var doomed = await DaemonProcess.StartAsync(_dataDir, Password, new Dictionary<string, string> { [Xapi.Storage.CrashPoints.Variable] = crash.Point }))
        {
            using var client = new XenApiClient(doomed.Uri);
            await client.LoginAsync("root", Password);
            if (crash.Trigger == "snapshot")
            {
                try
                {
                    await client.InvokeAsync("VDI.snapshot", _chain.Ref["A"], new Dictionary<string, object?>());
                    Assert.Fail("the daemon answered a snapshot it should have died in");
                }
                catch (HttpRequestException)
                {
                    // The daemon died inside the call.
                }
            }
            else
            {
                try
                {
                    await client.InvokeAsync("VDI.destroy", _chain.Ref[crash.Trigger]);
                }
                catch (HttpRequestException)
                {
                    // The collector the destroy started may kill the daemon before the answer is sent.
                }
            }
            Assert.That(await doomed.WaitForExitAsync(Deadline), Is.EqualTo(SigKill), "the daemon killed itself:\n" + string.Join("\n", doomed.Output.TakeLast(20)));
        }
        var journal = Path.Combine(SrDirectory, ".journal", $"{crash.JournalKind}-{uuid[crash.JournalSubject]}.json");
        Assert.That(File.Exists(journal), Is.True, $"the {crash.JournalKind} journal is left behind");
        AssertStoppedAt(crash.Point);

        using var daemon = await DaemonProcess.StartAsync(_dataDir, Password);
        using var api = new XenApiClient(daemon.Uri);
        await api.LoginAsync("root", Password);
        var sr = await DefaultSrAsync(api);
        await WaitForTheCollectorAsync(daemon, api, sr);

        var expected = _chain.Sha.Where(kv => !crash.Gone.Contains(kv.Key)).ToDictionary(kv => uuid[kv.Key], kv => kv.Value);
        var visible = await CheckTheSrAsync(daemon.Uri, api, sr, SrDirectory, expected, (crash.RollsForward ? 1 : 0, _chain.Sha["A"]));
        var files = ChainFiles(SrDirectory).Keys.ToHashSet();
        var bases = new[] { "B1", "B2", "B3" }.Where(b => !crash.Gone.Contains(b)).Select(b => uuid[b]);
        Assert.That(files.Except(visible.Keys), Is.EquivalentTo(crash.RollsForward ? bases.Append(ChainFiles(SrDirectory)[uuid["A"]].Parent!) : bases),
            crash.RollsForward ? "the snapshot was finished over a new base" : "exactly the bases still needed are left");

        // The recovered SR keeps working: deleting every other VDI collapses the chain into A.
        foreach (var (vdiUuid, reference) in visible.Where(v => v.Key != uuid["A"]))
        {
            await api.InvokeAsync("VDI.destroy", reference);
        }
        await WaitForTheCollectorAsync(daemon, api, sr);
        await CheckTheSrAsync(daemon.Uri, api, sr, SrDirectory, new Dictionary<string, string> { [uuid["A"]] = _chain.Sha["A"] }, (0, ""));
        Assert.That(ChainFiles(SrDirectory), Is.EquivalentTo(new[] { KeyValuePair.Create(uuid["A"], new Image(null, false)) }), "A alone is left, with no backing file");
        TestContext.Out.WriteLine($"{crash.Point}: {clock.Elapsed.TotalSeconds:0.0} s");
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)), "one case stays within a minute");
    }

    /// <summary>
    /// A leaf coalesce that fails while the daemon runs (its parent is locked by another process)
    /// leaves its journal; A is then snapshotted, so A's file is no longer the one the journal was
    /// about. The restart must not replay the journal over the new shape of the chain.
    /// </summary>
    [Test]
    public async Task A_failed_leaf_coalesce_is_not_replayed_over_a_chain_that_changed_since()
    {
        var clock = Stopwatch.StartNew();
        await RestoreAsync();
        var uuid = _chain.Uuid;
        using (var daemon = await DaemonProcess.StartAsync(_dataDir, Password))
        {
            using var client = new XenApiClient(daemon.Uri);
            await client.LoginAsync("root", Password);
            using (await HoldAsync(Path.Combine(SrDirectory, uuid["B3"] + ".qcow2")))
            {
                await client.InvokeAsync("VDI.destroy", _chain.Ref["S3"]);
                await daemon.WaitForLineAsync("Garbage collection of SR", Deadline);
            }
            Assert.That(await ExportShaAsync(daemon.Uri, client, _chain.Ref["A"]), Is.EqualTo(_chain.Sha["A"]), "the failed step changed no VDI");
            await client.InvokeAsync("VDI.snapshot", _chain.Ref["A"], new Dictionary<string, object?>());
        }

        using (var daemon = await DaemonProcess.StartAsync(_dataDir, Password))
        {
            using var client = new XenApiClient(daemon.Uri);
            await client.LoginAsync("root", Password);
            var sr = await DefaultSrAsync(client);
            await WaitForTheCollectorAsync(daemon, client, sr);
            var expected = _chain.Sha.Where(kv => kv.Key != "S3").ToDictionary(kv => uuid[kv.Key], kv => kv.Value);
            await CheckTheSrAsync(daemon.Uri, client, sr, SrDirectory, expected, (1, _chain.Sha["A"]));
        }
        TestContext.Out.WriteLine($"failed leaf coalesce: {clock.Elapsed.TotalSeconds:0.0} s");
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)));
    }

    /// <summary>Holds an image open for writing (qemu-io waiting for commands), so qemu's lock keeps any other writer out.</summary>
    private static async Task<IDisposable> HoldAsync(string image)
    {
        var start = new ProcessStartInfo("qemu-io") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in new[] { "-f", "qcow2", image })
        {
            start.ArgumentList.Add(argument);
        }
        var holder = Process.Start(start)!;
        await holder.StandardInput.WriteLineAsync("length");
        await holder.StandardInput.FlushAsync();
        // Its answer to "length" says the image is open, and locked.
        Assert.That(await holder.StandardOutput.ReadLineAsync().WaitAsync(Deadline), Does.Contain("MiB"));
        return new Holder(holder);
    }

    private sealed class Holder(Process process) : IDisposable
    {
        public void Dispose()
        {
            process.StandardInput.Close();
            process.WaitForExit();
            process.Dispose();
        }
    }

    private async Task RestoreAsync()
    {
        if (Directory.Exists(_dataDir))
        {
            Directory.Delete(_dataDir, recursive: true);
        }
        await RunAsync("cp", "-a", _pristine, _dataDir);
    }

    /// <summary>
    /// A kill at an arbitrary moment inside a long <c>qemu-img commit</c>: the tool dies with the
    /// daemon (it is frozen first, so only its parent-death signal can end it), and the restart
    /// runs the coalesce again from its journal. Budget: 60 s.
    /// </summary>
    [Test]
    public async Task A_daemon_killed_inside_a_long_commit_takes_qemu_img_along_and_the_restart_finishes_the_coalesce()
    {
        const long size = 384L << 20;
        const long written = 256L << 20;
        var clock = Stopwatch.StartNew();
        var dataDir = Path.Combine(_root, "long");
        string a;
        string sha;
        int commit;
        string srDirectory;
        using (var daemon = await DaemonProcess.StartAsync(dataDir, Password))
        {
            using var client = new XenApiClient(daemon.Uri);
            await client.LoginAsync("root", Password);
            var sr = await DefaultSrAsync(client);
            srDirectory = Path.Combine(dataDir, "sr", (string)(await client.InvokeAsync("SR.get_uuid", sr))!);
            a = await CreateVdiAsync(client, sr, size);
            await ImportAsync(daemon.Uri, client, a, new PatternContent(1, written));
            var s1 = (string)(await client.InvokeAsync("VDI.snapshot", a, new Dictionary<string, object?>()))!;
            await ImportAsync(daemon.Uri, client, a, new PatternContent(2, written));
            sha = await ExportShaAsync(daemon.Uri, client, a);
            Assert.That(sha, Is.EqualTo(PatternContent.Sha(2, written, size)), "A holds its second layer");

            // Deleting S1 leaves A its base's only child: 256 MiB to commit into the base.
            await client.InvokeAsync("VDI.destroy", s1);
            await daemon.WaitForLineAsync("coalescing leaf", Deadline);
            commit = await ChildAsync(daemon.Id, "commit");
            await Task.Delay(Random.Shared.Next(0, 100));
            Run("kill", "-STOP", commit.ToString(CultureInfo.InvariantCulture));
            Assert.That(IsAlive(commit), Is.True, "the commit was still running when the daemon was killed");
            TestContext.Out.WriteLine($"killed {clock.Elapsed.TotalSeconds:0.0} s in");
            daemon.Kill();
        }
        try
        {
            for (var gone = Stopwatch.StartNew(); IsAlive(commit); await Task.Delay(10))
            {
                Assert.That(gone.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "qemu-img died with the daemon");
            }
        }
        finally
        {
            if (IsAlive(commit))
            {
                Run("kill", "-KILL", commit.ToString(CultureInfo.InvariantCulture));
            }
        }
        Assert.That(Directory.EnumerateFiles(Path.Combine(srDirectory, ".journal")), Has.Exactly(1).Items, "the leaf coalesce is journalled");

        using (var daemon = await DaemonProcess.StartAsync(dataDir, Password))
        {
            using var client = new XenApiClient(daemon.Uri);
            await client.LoginAsync("root", Password);
            var sr = await DefaultSrAsync(client);
            await WaitForTheCollectorAsync(daemon, client, sr);
            var aUuid = (string)(await client.InvokeAsync("VDI.get_uuid", a))!;
            await CheckTheSrAsync(daemon.Uri, client, sr, srDirectory, new Dictionary<string, string> { [aUuid] = sha }, (0, ""));
            Assert.That(ChainFiles(srDirectory), Is.EquivalentTo(new[] { KeyValuePair.Create(aUuid, new Image(null, false)) }), "A alone is left, with no backing file");
        }
        TestContext.Out.WriteLine($"long commit: {clock.Elapsed.TotalSeconds:0.0} s");
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)));
    }

    /// <summary>The pid of the daemon's qemu-img child whose command line has <paramref name="verb"/>, once it runs.</summary>
    private static async Task<int> ChildAsync(int parent, string verb)
    {
        // Nothing announces a new process; the commit starts within moments of the log line.
        for (var clock = Stopwatch.StartNew(); ; await Task.Delay(5))
        {
            foreach (var directory in Directory.EnumerateDirectories("/proc"))
            {
                if (int.TryParse(Path.GetFileName(directory), out var pid) && TryStat(pid, out var state, out var ppid) && ppid == parent && state != 'Z'
                    // Once setpriv has exec'd it: before, the parent-death signal is not yet armed.
                    && TryRead(Path.Combine(directory, "cmdline"))?.Split('\0') is [var program, .. var arguments]
                    && program.EndsWith("qemu-img", StringComparison.Ordinal) && arguments.Contains(verb))
                {
                    return pid;
                }
            }
            Assert.That(clock.Elapsed, Is.LessThan(Deadline), $"the daemon runs qemu-img {verb}");
        }
    }

    private static bool IsAlive(int pid) => TryStat(pid, out var state, out _) && state != 'Z';

    // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so fields are read after its ')'.
    private static bool TryStat(int pid, out char state, out int ppid)
    {
        state = ' ';
        ppid = 0;
        if (TryRead($"/proc/{pid}/stat") is not { } stat)
        {
            return false;
        }
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        state = fields[0][0];
        ppid = int.Parse(fields[1], CultureInfo.InvariantCulture);
        return true;
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>A layer of pseudo-random data made 4 MiB at a time, so hundreds of MiB never sit in memory.</summary>
    private sealed class PatternContent(int seed, long length) : HttpContent
    {
        private static void Fill(int seed, long chunk, Span<byte> buffer) => new Random(seed * 1_000_003 + (int)chunk).NextBytes(buffer);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var buffer = new byte[Chunk];
            for (var offset = 0L; offset < length; offset += Chunk)
            {
                var count = (int)Math.Min(Chunk, length - offset);
                Fill(seed, offset / Chunk, buffer.AsSpan(0, count));
                await stream.WriteAsync(buffer.AsMemory(0, count));
            }
        }

        protected override bool TryComputeLength(out long size)
        {
            size = length;
            return true;
        }

        /// <summary>The sha256 of a disk of <paramref name="size"/> bytes holding this layer and zeros after it.</summary>
        public static string Sha(int seed, long length, long size)
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[Chunk];
            for (var offset = 0L; offset < size; offset += Chunk)
            {
                var count = (int)Math.Min(Chunk, size - offset);
                Array.Clear(buffer);
                if (offset < length)
                {
                    Fill(seed, offset / Chunk, buffer.AsSpan(0, (int)Math.Min(count, length - offset)));
                }
                hash.AppendData(buffer, 0, count);
            }
            return Convert.ToHexString(hash.GetHashAndReset());
        }
    }

    /// <summary>What the files show about where the daemon stopped, so each case tests the step it names.</summary>
    private void AssertStoppedAt(string point)
    {
        var uuid = _chain.Uuid;
        var files = ChainFiles(SrDirectory);
        bool Same(string name) => FileSha(Path.Combine(SrDirectory, uuid[name] + ".qcow2")) == FileSha(Path.Combine(PristineSrDirectory, uuid[name] + ".qcow2"));
        string? ParentOf(string name) => files.TryGetValue(uuid[name], out var image) ? image.Parent : null;
        var onB1 = new[] { "B3", "S2" }.Count(n => ParentOf(n) == uuid["B1"]);
        switch (point)
        {
            case "coalesce.journalled":
            case "coalesce.committed":
                Assert.That(Same("B1"), Is.EqualTo(point == "coalesce.journalled"), "B2's data is copied into B1 only by the commit");
                Assert.That(onB1, Is.Zero, "no child is relinked yet");
                break;
            case "coalesce.relinked-one":
                Assert.That(Same("B1"), Is.False);
                Assert.That(onB1, Is.EqualTo(1), "one of B2's two children is relinked, the other not");
                break;
            case "leaf.journalled":
            case "leaf.committed":
                Assert.That(Same("B3"), Is.EqualTo(point == "leaf.journalled"), "A's data is copied into B3 only by the commit");
                Assert.That(ParentOf("A"), Is.EqualTo(uuid["B3"]));
                break;
            case "leaf.renamed":
                Assert.That(files.ContainsKey(uuid["B3"]), Is.False, "B3's file took A's name");
                Assert.That(ParentOf("A"), Is.EqualTo(uuid["B2"]));
                break;
            case "snapshot.linked":
                Assert.That(ParentOf("A"), Is.EqualTo(uuid["B3"]), "A is not replaced yet");
                Assert.That(LinkCount(Path.Combine(SrDirectory, uuid["A"] + ".qcow2")), Is.EqualTo(2), "A's file has its second name, the new base");
                break;
            case "snapshot.source-replaced":
                Assert.That(ParentOf("A"), Is.Not.EqualTo(uuid["B3"]), "A is an overlay on the new base");
                Assert.That(files[ParentOf("A")!].Parent, Is.EqualTo(uuid["B3"]));
                break;
            default:
                Assert.Fail($"no evidence known for {point}");
                break;
        }
    }

    /// <summary>
    /// The checks every recovered SR passes: visible VDIs export what they held; no journal, no
    /// temporary file, no orphan marker; records and files name the same images, hidden alike;
    /// nothing the collector should have merged or removed is left; the SR's utilisation is what
    /// its files occupy. Returns the visible VDIs (uuid → ref).
    /// </summary>
    private static async Task<Dictionary<string, string>> CheckTheSrAsync(Uri uri, XenApiClient client, string sr, string srDirectory, Dictionary<string, string> expected, (int Count, string Sha) copies)
    {
        var records = await VdiRecordsAsync(client, sr);
        var files = ChainFiles(srDirectory);
        var leftovers = Directory.EnumerateFiles(srDirectory, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(srDirectory, f))
            .Where(f => f.EndsWith(".tmp", StringComparison.Ordinal) || f.StartsWith(".journal", StringComparison.Ordinal)
                || (f.EndsWith(".hidden", StringComparison.Ordinal) && !files.ContainsKey(f[..^".hidden".Length])));
        Assert.That(leftovers, Is.Empty, "no journal, temporary file or orphan marker is left");
        Assert.That(records.ToDictionary(r => r.Uuid, r => r.Hidden), Is.EquivalentTo(files.ToDictionary(f => f.Key, f => f.Value.Hidden)),
            "every image has a record and every record an image, hidden alike");
        Assert.That(CollectableWork(files.Select(f => (f.Key, f.Value.Parent, f.Value.Hidden))), Is.Empty, "the collector left nothing it should have done");
        var utilisation = ToLong((await RecordAsync(client, "SR", sr))["physical_utilisation"]);
        Assert.That(utilisation, Is.EqualTo(await AllocatedBytesAsync(srDirectory)), "the SR's physical_utilisation is what its files occupy");

        Assert.That(records.Where(r => r.Busy).Select(r => r.Uuid), Is.Empty, "no VDI is left in an operation the crash ended");

        var visible = records.Where(r => !r.Hidden).ToDictionary(r => r.Uuid, r => r.Ref);
        var extra = visible.Keys.Except(expected.Keys).ToList();
        Assert.That(expected.Keys.Except(visible.Keys), Is.Empty, "every VDI is still there");
        Assert.That(extra, Has.Count.EqualTo(copies.Count), "no VDI appeared except a finished snapshot");
        foreach (var (vdiUuid, reference) in visible)
        {
            var want = expected.TryGetValue(vdiUuid, out var sha) ? sha : copies.Sha;
            Assert.That(await ExportShaAsync(uri, client, reference), Is.EqualTo(want), $"VDI {vdiUuid} exports the bytes it had");
        }
        return visible;
    }

    /// <summary>The collector's three kinds of work, on a chain given as (uuid, parent, hidden).</summary>
    private static List<string> CollectableWork(IEnumerable<(string Uuid, string? Parent, bool Hidden)> nodes)
    {
        var all = nodes.ToDictionary(n => n.Uuid);
        var children = all.Values.Where(n => n.Parent is not null).GroupBy(n => n.Parent!).ToDictionary(g => g.Key, g => g.Count());
        bool OnlyChildOfHiddenParent((string Uuid, string? Parent, bool Hidden) n) =>
            n.Parent is { } p && all.TryGetValue(p, out var parent) && parent.Hidden && children[p] == 1;
        return all.Values.Where(n =>
                (n.Hidden && !children.ContainsKey(n.Uuid))
                || OnlyChildOfHiddenParent(n))
            .Select(n => n.Uuid).ToList();
    }

    /// <summary>
    /// Waits until the records show nothing to collect: the daemon rescans after every step, so
    /// each event on the SR's VDIs is a chance that it is done.
    /// </summary>
    private static async Task WaitForTheCollectorAsync(DaemonProcess daemon, XenApiClient client, string sr)
    {
        var clock = Stopwatch.StartNew();
        var token = "";
        while (true)
        {
            var batch = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("event.from", new[] { "VDI", "SR" }, token, 5.0))!;
            token = (string)batch["token"]!;
            var records = await VdiRecordsAsync(client, sr);
            if (CollectableWork(records.Select(r => (r.Uuid, r.Parent, r.Hidden))).Count == 0)
            {
                return;
            }
            Assert.That(clock.Elapsed, Is.LessThan(Deadline), () => "the collector finishes:\n" + string.Join("\n", daemon.Output.TakeLast(30)));
        }
    }

    /// <summary>The SR's images as the files say: uuid → backing uuid and whether the image is hidden (has children or a marker).</summary>
    private static Dictionary<string, Image> ChainFiles(string srDirectory)
    {
        var parents = Directory.EnumerateFiles(srDirectory, "*.qcow2")
            .ToDictionary(f => Path.GetFileNameWithoutExtension(f), BackingUuid);
        return parents.ToDictionary(p => p.Key, p => new Image(p.Value,
            parents.ContainsValue(p.Key) || File.Exists(Path.Combine(srDirectory, p.Key + ".hidden"))));
    }

    public sealed record Image(string? Parent, bool Hidden);

    // The qcow2 header names the backing file at offset 8 (offset) and 16 (length), big-endian.
    private static string? BackingUuid(string path)
    {
        using var file = File.OpenRead(path);
        var header = new byte[20];
        file.ReadExactly(header);
        var offset = BinaryPrimitives.ReadInt64BigEndian(header.AsSpan(8));
        var length = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(16));
        if (offset == 0)
        {
            return null;
        }
        var name = new byte[length];
        file.Position = offset;
        file.ReadExactly(name);
        return System.Text.Encoding.UTF8.GetString(name)[..^".qcow2".Length];
    }

    private sealed record VdiRow(string Ref, string Uuid, string? Parent, bool Hidden, bool Busy);

    private static async Task<List<VdiRow>> VdiRecordsAsync(XenApiClient client, string sr)
    {
        var all = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VDI.get_all_records"))!;
        return all.Select(kv => (Ref: kv.Key, Record: (IReadOnlyDictionary<string, object?>)kv.Value!))
            .Where(r => (string)r.Record["SR"]! == sr)
            .Select(r => new VdiRow(r.Ref, (string)r.Record["uuid"]!,
                ((IReadOnlyDictionary<string, object?>)r.Record["sm_config"]!).TryGetValue("vhd-parent", out var parent) ? (string?)parent : null,
                !(bool)r.Record["managed"]!,
                ((IReadOnlyDictionary<string, object?>)r.Record["current_operations"]!).Count > 0))
            .ToList();
    }

    private static async Task<IReadOnlyDictionary<string, object?>> RecordAsync(XenApiClient client, string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync($"{cls}.get_record", reference))!;

    private static long ToLong(object? value) => value is string s ? long.Parse(s, CultureInfo.InvariantCulture) : Convert.ToInt64(value, CultureInfo.InvariantCulture);

    internal static async Task<string> DefaultSrAsync(XenApiClient client)
    {
        var pools = (IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!;
        return (string)(await client.InvokeAsync("pool.get_default_SR", pools[0]))!;
    }

    internal static async Task<string> CreateVdiAsync(XenApiClient client, string sr, long size) =>
        (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = "disk",
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = size.ToString(CultureInfo.InvariantCulture),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
        }))!;

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromMinutes(2) };

    /// <summary>PUT /import_raw_vdi; succeeds only when the task says so.</summary>
    internal static async Task ImportAsync(Uri uri, XenApiClient client, string vdi, HttpContent body)
    {
        using var response = await Http.PutAsync(new Uri(uri, $"import_raw_vdi?vdi={vdi}&session_id={client.Session}&format=raw"), body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), text);
        var task = response.Headers.GetValues("task-id").Single();
        // The task's end becomes visible a moment after the response ends, as clients that poll it see.
        var token = "";
        var status = await client.InvokeAsync("task.get_status", task);
        for (var clock = Stopwatch.StartNew(); Equals(status, "pending") && clock.Elapsed < Deadline;)
        {
            token = (string)((IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("event.from", new[] { "task" }, token, 5.0))!)["token"]!;
            status = await client.InvokeAsync("task.get_status", task);
        }
        if (!Equals(status, "success"))
        {
            Assert.Fail($"the import ended {status}: " + string.Join(" ", (IReadOnlyList<object?>)(await client.InvokeAsync("task.get_error_info", task))!) + text);
        }
    }

    private static Task ImportAsync(Uri uri, XenApiClient client, string vdi, byte[] body) => ImportAsync(uri, client, vdi, new ByteArrayContent(body));

    /// <summary>GET /export_raw_vdi, hashed as it streams.</summary>
    internal static async Task<string> ExportShaAsync(Uri uri, XenApiClient client, string vdi)
    {
        using var response = await Http.GetAsync(new Uri(uri, $"export_raw_vdi?vdi={vdi}&session_id={client.Session}&format=raw"), HttpCompletionOption.ResponseHeadersRead);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        await using var stream = await response.Content.ReadAsStreamAsync();
        return Convert.ToHexString(await SHA256.HashDataAsync(stream));
    }

    private static string FileSha(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(file));
    }

    private static int LinkCount(string path) => int.Parse(Run("stat", "-c", "%h", path), CultureInfo.InvariantCulture);

    internal static async Task<long> AllocatedBytesAsync(string directory) =>
        (await RunAsync("find", directory, "-type", "f", "-printf", "%b\\n"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Sum(b => long.Parse(b, CultureInfo.InvariantCulture) * 512);

    internal static string Run(string file, params string[] arguments) => RunAsync(file, arguments).GetAwaiter().GetResult();

    internal static async Task<string> RunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.That(process.ExitCode, Is.Zero, $"{file}: {error}");
        return (await output).Trim();
    }
}
