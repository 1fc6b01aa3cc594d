using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Xapi.Protocol;

/// <summary>
/// Disk data path throughput against <c>dd</c> moving the same bytes on the same filesystem in the
/// same run: raw and VHD import and export over HTTP (curl as the client, the way scripts use the
/// real host) and NBD export (qemu-img reading the daemon's NBD server), for a 4 GiB thin disk
/// with 1 GiB written, in the first-boot ext SR (qcow2 behind qemu-nbd).
/// </summary>
/// <remarks>
/// Fairness (see the datapath notes): every run is a whole command timed from start to exit,
/// after an untimed <c>sync</c> so that no run pays for the writeback of the one before,
/// dd and ours alternate (dd first in even runs, ours first in odd ones), the page cache is warm
/// for both, imports and their dd flush before they end (dd conv=fdatasync against an import that
/// flushes before its task completes), exports to a file flush neither, and the figure quoted is
/// the median of the per-pair ratios, beside the median MiB/s of each side and the load average.
/// </remarks>
internal static class StorageThroughput
{
    private const long DiskSize = 4L << 30;
    private const long WrittenBytes = 1L << 30;
    private const int Piece = 4 << 20;
    private const string Block = "4M";

    /// <param name="Client">
    /// The same client command against a server that does the least it can: for HTTP
    /// <see cref="NullHttpServer"/>, for NBD qemu-nbd serving the source file (no image format, no
    /// session): what the transfer costs the client and the transport.
    /// </param>
    private sealed record Case(string Name, long Bytes, double Target, Func<Task<double>> Ours, Func<Task<double>> Dd, string Baseline, Func<Task<double>>? Client = null);

    public static async Task RunAsync(int runs, IReadOnlyCollection<string> only)
    {
        await using var bench = await BenchDaemon.StartAsync();
        await using var nullServer = new NullHttpServer();
        var daemon = bench.Host;
        using var client = new XenApiClient(daemon.HttpUri);
        var session = await client.LoginAsync("root", BenchDaemon.Password);
        var pools = (IReadOnlyList<object?>)(await client.InvokeAsync("pool.get_all"))!;
        var sr = (string)(await client.InvokeAsync("pool.get_default_SR", pools[0]))!;
        // Same filesystem as the SR (data-dir/sr/<uuid>), so dd writes where the daemon does.
        var work = Directory.CreateDirectory(Path.Combine(daemon.Options.DataDir, "bench")).FullName;
        var source = Path.Combine(work, "source.raw");
        var sourceVhd = Path.Combine(work, "source.vhd");
        var output = Path.Combine(work, "out");

        Console.WriteLine($"storage data path vs dd: {DiskSize >> 30} GiB thin disk, {WrittenBytes >> 30} GiB written in {Piece >> 20} MiB pieces, ext SR (qcow2 via qemu-nbd), {runs} runs per case, {Environment.ProcessorCount} cores, {work}");
        await WriteSourceAsync(source);

        // The disk every export reads: imported once, then checked byte for byte against the source.
        var exported = await CreateVdiAsync(client, sr, "bench export source");
        var importTask = await CurlAsync("-T", source, Url(daemon.HttpUri, "import_raw_vdi", session, exported, "raw"));
        await CheckTaskAsync(client, importTask);
        await CurlAsync("-o", output, Url(daemon.HttpUri, "export_raw_vdi", session, exported, "raw"));
        await CheckSameAsync(source, output);
        await CurlAsync("-o", sourceVhd, Url(daemon.HttpUri, "export_raw_vdi", session, exported, "vhd"));
        await RunAsync("qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", sourceVhd, source);
        var vhdBytes = new FileInfo(sourceVhd).Length;
        var exportedUuid = (string)(await client.InvokeAsync("VDI.get_uuid", exported))!;

        // The daemon's own NBD server, under the export name VDI.get_nbd_info gives.
        var nbdSource = NbdJson(daemon.NbdEndPoint ?? throw new InvalidOperationException("the daemon serves no NBD"), $"/{exportedUuid}?session_id={session}");
        await RunAsync("qemu-img", "convert", "-t", "none", "-f", "raw", "-O", "raw", nbdSource, output);
        await CheckSameAsync(source, output);
        File.Delete(output);

        if (only.Contains("hold"))
        {
            // For profiling by hand: the daemon stays up with its disks until stdin closes.
            Console.WriteLine($"source {source}\nvhd {sourceVhd}\nexport {Url(daemon.HttpUri, "export_raw_vdi", session, exported, "raw")}\nnbd {nbdSource}\nimport {Url(daemon.HttpUri, "import_raw_vdi", session, "VDI", "raw")}\nsession {session}\nsr {sr}\npid {Environment.ProcessId}");
            await Console.In.ReadToEndAsync();
            return;
        }

        async Task<double> ImportAsync(string file, string format)
        {
            var vdi = await CreateVdiAsync(client, sr, "bench import");
            try
            {
                await RunAsync("sync");
                var watch = Stopwatch.StartNew();
                var task = await CurlAsync("-T", file, Url(daemon.HttpUri, "import_raw_vdi", session, vdi, format));
                var seconds = watch.Elapsed.TotalSeconds;
                await CheckTaskAsync(client, task);
                return seconds;
            }
            finally
            {
                await client.InvokeAsync("VDI.destroy", vdi);
            }
        }

        async Task<double> TimedAsync(string file, params string[] arguments)
        {
            await RunAsync("sync");
            var watch = Stopwatch.StartNew();
            await RunAsync(file, arguments);
            var seconds = watch.Elapsed.TotalSeconds;
            File.Delete(output);
            return seconds;
        }

        // For NBD the client's own reference server: qemu-nbd serving the raw source file itself.
        await using var referenceNbd = await ReferenceNbdServer.StartAsync(source);
        string NullGet(long bytes) => new Uri(nullServer.Uri, $"/?bytes={bytes}").ToString();
        var cases = new List<Case>
        {
            new("raw import", DiskSize, 0.8,
                () => ImportAsync(source, "raw"),
                () => TimedAsync("dd", $"if={source}", $"of={output}", $"bs={Block}", "conv=sparse,fdatasync", "status=none"),
                "dd conv=sparse,fdatasync of the raw file",
                () => TimedAsync("curl", [.. CurlArguments("-T", source, nullServer.Uri.ToString()), "-o", "/dev/null"])),
            new("raw export", DiskSize, 0.8,
                () => TimedAsync("curl", CurlArguments("-o", output, Url(daemon.HttpUri, "export_raw_vdi", session, exported, "raw"))),
                () => TimedAsync("dd", $"if={source}", $"of={output}", $"bs={Block}", "status=none"),
                "dd of the raw file",
                () => TimedAsync("curl", CurlArguments("-o", output, NullGet(DiskSize)))),
            new("vhd import", vhdBytes, 0.6,
                () => ImportAsync(sourceVhd, "vhd"),
                () => TimedAsync("dd", $"if={sourceVhd}", $"of={output}", $"bs={Block}", "conv=fdatasync", "status=none"),
                "dd conv=fdatasync of the VHD file",
                () => TimedAsync("curl", [.. CurlArguments("-T", sourceVhd, nullServer.Uri.ToString()), "-o", "/dev/null"])),
            new("vhd export", vhdBytes, 0.6,
                () => TimedAsync("curl", CurlArguments("-o", output, Url(daemon.HttpUri, "export_raw_vdi", session, exported, "vhd"))),
                () => TimedAsync("dd", $"if={sourceVhd}", $"of={output}", $"bs={Block}", "status=none"),
                "dd of the VHD file",
                () => TimedAsync("curl", CurlArguments("-o", output, NullGet(vhdBytes)))),
            new("nbd export", DiskSize, 0.8,
                () => TimedAsync("qemu-img", "convert", "-t", "none", "-f", "raw", "-O", "raw", nbdSource, output),
                () => TimedAsync("dd", $"if={source}", $"of={output}", $"bs={Block}", "oflag=direct", "conv=sparse", "status=none"),
                "dd oflag=direct conv=sparse of the raw file",
                () => TimedAsync("qemu-img", "convert", "-t", "none", "-f", "raw", "-O", "raw", referenceNbd.Url, output)),
        };

        Console.WriteLine($"{"case",-11} {"bytes",14} {"ours MiB/s",11} {"dd MiB/s",9} {"ratio",6} {"min-max",11} {"target",6} {"client",6} {"load",11}  baseline");
        foreach (var each in cases.Where(c => only.Count == 0 || only.Contains(c.Name.Split(' ')[0] + "-" + c.Name.Split(' ')[1])))
        {
            // One untimed pair first: the JIT, qemu-nbd's start and the page cache settle.
            await each.Ours();
            await each.Dd();
            var load = LoadAverage();
            var ours = new List<double>();
            var dd = new List<double>();
            var clientOnly = new List<double>();
            for (var run = 0; run < runs; run++)
            {
                if (run % 2 == 0)
                {
                    dd.Add(await each.Dd());
                    ours.Add(await each.Ours());
                }
                else
                {
                    ours.Add(await each.Ours());
                    dd.Add(await each.Dd());
                }
                if (each.Client is not null)
                {
                    clientOnly.Add(await each.Client());
                }
            }
            var ratios = ours.Zip(dd, (o, d) => d / o).ToList();
            // The best ratio any server could reach: dd against the client alone, with a server that does nothing.
            var clientRatio = clientOnly.Count > 0 ? Median(clientOnly.Zip(dd, (c, d) => d / c).ToList()).ToString("0.00", CultureInfo.InvariantCulture) : "-";
            var mib = each.Bytes / (double)(1 << 20);
            Console.WriteLine($"{each.Name,-11} {each.Bytes,14:N0} {mib / Median(ours),11:N0} {mib / Median(dd),9:N0} {Median(ratios),6:0.00} {ratios.Min(),5:0.00}-{ratios.Max(),-5:0.00} {each.Target,6:0.0} {clientRatio,6} {load,5:0.0}-{LoadAverage(),-5:0.0}  {each.Baseline}");
        }
        Console.WriteLine("client: dd's time over the same client command's time against a server doing the least it can (HTTP: one that only receives or sends; NBD: qemu-nbd serving the raw source file)");
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static double LoadAverage() =>
        double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);

    /// <summary>4 GiB, sparse, with 1 GiB of random data in 4 MiB pieces spread evenly (one every 16 MiB).</summary>
    private static async Task WriteSourceAsync(string path)
    {
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 0);
        file.SetLength(DiskSize);
        var buffer = new byte[Piece];
        var stride = DiskSize / (WrittenBytes / Piece);
        for (var offset = 0L; offset < DiskSize; offset += stride)
        {
            Random.Shared.NextBytes(buffer);
            file.Position = offset;
            await file.WriteAsync(buffer);
        }
    }

    private static async Task<string> CreateVdiAsync(XenApiClient client, string sr, string name) =>
        (string)(await client.InvokeAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = name,
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = DiskSize.ToString(CultureInfo.InvariantCulture),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
        }))!;

    private static string Url(Uri daemon, string path, string session, string vdi, string format) =>
        new Uri(daemon, $"/{path}?session_id={Uri.EscapeDataString(session)}&vdi={Uri.EscapeDataString(vdi)}&format={format}").ToString();

    private static string[] CurlArguments(string mode, string file, string url) =>
        // No Expect: 100-continue (real hosts never answer it), no proxy, fail on HTTP errors.
        ["-sS", "-f", "--noproxy", "*", "-H", "Expect:", mode, file, url];

    /// <summary>Runs curl; returns the task the daemon named in its task-id header.</summary>
    private static async Task<string> CurlAsync(string mode, string file, string url)
    {
        var headers = Path.GetTempFileName();
        try
        {
            await RunAsync("curl", [.. CurlArguments(mode, file, url), "-D", headers, .. (mode == "-T" ? new[] { "-o", "/dev/null" } : [])]);
            return File.ReadLines(headers).Select(l => l.Split(':', 2)).First(p => p[0].Equals("task-id", StringComparison.OrdinalIgnoreCase))[1].Trim();
        }
        finally
        {
            File.Delete(headers);
        }
    }

    private static async Task CheckTaskAsync(XenApiClient client, string task)
    {
        var status = (string)(await client.InvokeAsync("task.get_status", task))!;
        if (status != "success")
        {
            var error = (IReadOnlyList<object?>)(await client.InvokeAsync("task.get_error_info", task))!;
            throw new InvalidOperationException($"task {task} ended {status}: {string.Join(" ", error)}");
        }
    }

    private static async Task CheckSameAsync(string expected, string actual)
    {
        static async Task<string> HashAsync(string path)
        {
            await using var file = File.OpenRead(path);
            return Convert.ToHexString(await SHA256.HashDataAsync(file));
        }
        if (await HashAsync(expected) != await HashAsync(actual))
        {
            throw new InvalidOperationException($"{actual} differs from {expected}");
        }
    }

    /// <summary>qemu refuses a query in an nbd:// URL; the JSON form carries the export name as it is.</summary>
    private static string NbdJson(IPEndPoint endPoint, string exportName) =>
        "json:" + System.Text.Json.JsonSerializer.Serialize(new
        {
            file = new
            {
                driver = "nbd",
                server = new { type = "inet", host = endPoint.Address.ToString(), port = endPoint.Port.ToString(CultureInfo.InvariantCulture) },
                export = exportName,
            },
        });

    private static async Task RunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} exited {process.ExitCode}: {await stderr}{await stdout}");
        }
    }

    /// <summary>qemu-nbd (read-only, persistent, on a free loopback port) serving one raw file.</summary>
    private sealed class ReferenceNbdServer : IAsyncDisposable
    {
        private readonly Process _process;

        private ReferenceNbdServer(Process process, int port)
        {
            _process = process;
            Url = $"nbd://127.0.0.1:{port}";
        }

        public string Url { get; }

        public static async Task<ReferenceNbdServer> StartAsync(string file)
        {
            var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            var port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            // Its stderr is dropped: the readiness probe below connects without negotiating, which it reports.
            var process = Process.Start(new ProcessStartInfo("qemu-nbd", ["-r", "-t", "-f", "raw", "-b", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), file]) { UseShellExecute = false, RedirectStandardError = true })!;
            process.ErrorDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    using var client = new System.Net.Sockets.TcpClient();
                    await client.ConnectAsync(IPAddress.Loopback, port);
                    return new ReferenceNbdServer(process, port);
                }
                catch (System.Net.Sockets.SocketException) when (attempt < 100 && !process.HasExited)
                {
                    await Task.Delay(50);
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            _process.Kill();
            await _process.WaitForExitAsync();
            _process.Dispose();
        }
    }
}
