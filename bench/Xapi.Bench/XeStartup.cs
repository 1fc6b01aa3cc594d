using System.Diagnostics;
using System.Globalization;
using Xapi.Model;
using Xapi.Protocol;

/// <summary>
/// One <c>xe vm-list</c> on 1,000 VMs as an administrator runs it: a fresh process each time,
/// wall time and peak resident memory, beside a bare <c>dotnet</c> hello-world published the same
/// way in the same run (that ratio cancels the machine). Publish modes: Native AOT (what
/// scripts/install-xe.sh installs), framework-dependent ReadyToRun, and plain framework-dependent.
/// </summary>
internal static class XeStartup
{
    private static readonly string[] AllModes = ["aot", "r2r", "framework"];

    // An empty HOME for every run: no ~/.xe of the person running the bench.
    private static string Home { get; set; } = Path.GetTempPath();

    public static async Task RunAsync(int runs, int vmCount, IReadOnlyList<string> modes)
    {
        modes = modes.Count > 0 ? modes : ["aot", "framework"];
        foreach (var mode in modes.Where(m => !AllModes.Contains(m)))
        {
            throw new ArgumentException($"unknown publish mode {mode}; use {string.Join(", ", AllModes)}");
        }
        var root = FindRepositoryRoot();
        var work = Directory.CreateTempSubdirectory("xapi-bench-xe-").FullName;
        Home = Directory.CreateDirectory(Path.Combine(work, "home")).FullName;
        try
        {
            var hello = WriteHelloWorld(work);
            var builds = new List<(string Mode, string Xe, string Hello)>();
            foreach (var mode in modes)
            {
                Console.WriteLine($"publishing xe and hello-world ({mode}) ...");
                var xe = await PublishAsync(Path.Combine(root, "src", "Xapi.Cli"), Path.Combine(work, "xe-" + mode), mode, "xe");
                var bare = await PublishAsync(hello, Path.Combine(work, "hello-" + mode), mode, "hello");
                builds.Add((mode, xe, bare));
            }

            await using var bench = await BenchDaemon.StartAsync();
            var daemon = bench.Host;
            CreateVms(daemon, vmCount);
            string[] connection = ["-s", "127.0.0.1", "-p", daemon.HttpUri.Port.ToString(CultureInfo.InvariantCulture), "-u", "root", "-pw", BenchDaemon.Password, "--nossl"];

            // What the runs print: a failing command would time its error path, not the listing.
            var probe = await RunOnceAsync(builds[0].Xe, ["vm-list", .. connection]);
            var records = probe.Stdout.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Length;
            Console.WriteLine($"xe vm-list: exit {probe.ExitCode}, {probe.Stdout.Length:N0} bytes, {records:N0} records");
            if (probe.ExitCode != 0)
            {
                Console.WriteLine($"WARNING: xe vm-list failed, the figures below time its error: {probe.Stderr.Trim()}");
            }

            Console.WriteLine($"{vmCount:N0} VMs, loopback HTTP, median of {runs} runs (2 warm-up), {Environment.ProcessorCount} cores");
            Console.WriteLine($"{"publish",-10} {"xe ms",8} {"hello ms",9} {"ratio",6} {"xe MiB",8} {"hello MiB",10} {"ratio",6} {"xe size",10}");
            foreach (var (mode, xe, bare) in builds)
            {
                var xeTime = await MedianWallAsync(xe, ["vm-list", .. connection], runs);
                var helloTime = await MedianWallAsync(bare, [], runs);
                var xeRss = await MedianPeakRssAsync(xe, ["vm-list", .. connection], Math.Min(runs, 5));
                var helloRss = await MedianPeakRssAsync(bare, [], Math.Min(runs, 5));
                var size = DirectorySize(Path.GetDirectoryName(xe)!);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{mode,-10} {xeTime,8:F1} {helloTime,9:F1} {xeTime / helloTime,6:F2} {xeRss / 1024.0,8:F1} {helloRss / 1024.0,10:F1} {(double)xeRss / helloRss,6:F2} {size / 1048576.0,8:F1}MB"));
            }
            Console.WriteLine("target: one xe vm-list under 150 ms (real xe: 0.45 s after its maintainers' speed-up)");
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    // Behind the API, as the rpc bench fills its pool: the listing is what is measured.
    private static void CreateVms(Xapi.Server.Hosting.XapiHost daemon, int vmCount)
    {
        var vmClass = ApiSchema.Class("VM");
        var template = daemon.Database.Snapshot.All<VMRecord>().First(vm => vm.IsATemplate);
        daemon.Database.Write(tx =>
        {
            for (var i = 0; i < vmCount; i++)
            {
                tx.Create(vmClass, new Dictionary<string, object?>
                {
                    ["name_label"] = $"bench-vm-{i}",
                    ["memory_static_max"] = template.MemoryStaticMax,
                    ["VCPUs_max"] = 2L,
                    ["other_config"] = ValueMap.FromPairs([new("owner", "bench")]),
                });
            }
        });
    }

    private static string WriteHelloWorld(string work)
    {
        // Outside the repository: no Directory.Build.props or central package versions apply.
        var dir = Path.Combine(work, "hello");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "hello.csproj"), """
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <AssemblyName>hello</AssemblyName>
                <InvariantGlobalization>true</InvariantGlobalization>
                <ImplicitUsings>enable</ImplicitUsings>
              </PropertyGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(dir, "Program.cs"), "Console.WriteLine(\"Hello, World!\");\n");
        return dir;
    }

    private static async Task<string> PublishAsync(string project, string output, string mode, string name)
    {
        var rid = System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier;
        List<string> args = ["publish", project, "-c", "Release", "-o", output, "-nologo", "-v", "quiet"];
        args.AddRange(mode switch
        {
            "aot" => ["-r", rid, "-p:PublishAot=true"],
            "r2r" => ["-r", rid, "--self-contained", "false", "-p:PublishReadyToRun=true"],
            _ => [],
        });
        var result = await RunOnceAsync("dotnet", args);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"dotnet {string.Join(' ', args)} failed:\n{result.Stdout}\n{result.Stderr}");
        }
        return Path.Combine(output, name);
    }

    private static async Task<double> MedianWallAsync(string program, string[] args, int runs)
    {
        var times = new List<double>();
        for (var i = 0; i < runs + 2; i++)
        {
            var watch = Stopwatch.StartNew();
            var result = await RunOnceAsync(program, args);
            watch.Stop();
            if (result.ExitCode != 0 && i == 0)
            {
                Console.WriteLine($"  ({Path.GetFileName(program)} exit {result.ExitCode})");
            }
            if (i >= 2)
            {
                times.Add(watch.Elapsed.TotalMilliseconds);
            }
        }
        return Median(times);
    }

    // /usr/bin/time -f %M: the child's peak resident set (getrusage ru_maxrss), in KiB.
    private static async Task<long> MedianPeakRssAsync(string program, string[] args, int runs)
    {
        var sizes = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var result = await RunOnceAsync("/usr/bin/time", ["-f", "XE_BENCH_RSS %M", program, .. args]);
            var line = result.Stderr.Split('\n').Last(l => l.StartsWith("XE_BENCH_RSS ", StringComparison.Ordinal));
            sizes.Add(long.Parse(line["XE_BENCH_RSS ".Length..], CultureInfo.InvariantCulture));
        }
        return (long)Median(sizes);
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values.Count % 2 == 1 ? values[values.Count / 2] : (values[(values.Count / 2) - 1] + values[values.Count / 2]) / 2;
    }

    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunOnceAsync(string program, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        start.Environment["HOME"] = Home;
        start.Environment.Remove("XE_EXTRA_ARGS");
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout, await stderr);
    }

    private static long DirectorySize(string dir) =>
        new DirectoryInfo(dir).EnumerateFiles().Where(f => f.Extension is not (".pdb" or ".dbg")).Sum(f => f.Length);

    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xapi.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (Xapi.sln) above " + AppContext.BaseDirectory);
    }
}
