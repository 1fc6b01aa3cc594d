using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Xapi.EndToEnd.Tests;

/// <summary>The real daemon as a child process, so a test can kill it with SIGKILL.</summary>
public sealed class DaemonProcess : IDisposable
{
    private readonly Process _process;
    private readonly OutputLog _output;

    private DaemonProcess(Process process, Uri uri, OutputLog output)
    {
        _process = process;
        Uri = uri;
        _output = output;
    }

    public Uri Uri { get; }

    /// <summary>The daemon's process id (prlimit and dotnet exec, so it is the daemon itself), to find its children.</summary>
    public int Id => _process.Id;

    /// <summary>Whether the daemon has stopped (crashed, when the test did not kill it).</summary>
    public bool HasExited => _process.HasExited;

    /// <summary>Lines the daemon wrote so far, stdout and stderr.</summary>
    public IReadOnlyCollection<string> Output => _output.Lines;

    /// <summary>The first line the daemon wrote (or writes) that contains <paramref name="fragment"/>.</summary>
    public Task<string> WaitForLineAsync(string fragment, TimeSpan timeout) => _output.WaitForAsync(fragment).WaitAsync(timeout);

    /// <summary>What a run that ended by itself left behind.</summary>
    public sealed record Exit(int Code, string Output, string Error, TimeSpan Elapsed);

    /// <summary>CPU time the daemon has used (prlimit execs it, so it is the same process); null once it exited.</summary>
    public TimeSpan? CpuTime
    {
        get
        {
            try
            {
                _process.Refresh();
                return _process.TotalProcessorTime;
            }
            catch (InvalidOperationException)
            {
                return null;
            }
        }
    }

    /// <param name="openFiles">Runs the daemon under this open-file limit (soft and hard, with prlimit).</param>
    /// <param name="environment">Variables set for the daemon (e.g. a crash point).</param>
    private static ProcessStartInfo StartInfo(int port, string dataDir, string password, string[] extra, int? openFiles = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(openFiles is null ? "dotnet" : "prlimit")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }
        if (openFiles is { } limit)
        {
            start.ArgumentList.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"--nofile={limit}:{limit}"));
            start.ArgumentList.Add("--");
            start.ArgumentList.Add("dotnet");
        }
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "xapi-dotnet.dll"));
        foreach (var arg in new[] { "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--listen", "127.0.0.1", "--data-dir", dataDir, "--root-password", password, "--log-file", "", "--nbd-port", "-1" }.Concat(extra))
        {
            start.ArgumentList.Add(arg);
        }
        return start;
    }

    /// <summary>
    /// Runs the daemon expecting it to refuse to start: its exit code and output once it exits. A
    /// daemon still running after 30 s is killed and reported as exit code -1.
    /// </summary>
    public static async Task<Exit> RunUntilExitAsync(string dataDir, string password, params string[] extra)
    {
        var watch = Stopwatch.StartNew();
        using var process = Process.Start(StartInfo(FreePort(), dataDir, password, extra))!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await Task.WhenAny(process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(30)));
        if (!process.HasExited)
        {
            process.Kill();
            await process.WaitForExitAsync();
            return new Exit(-1, await output, await error, watch.Elapsed);
        }
        return new Exit(process.ExitCode, await output, await error, watch.Elapsed);
    }

    public static Task<DaemonProcess> StartAsync(string dataDir, string password, params string[] extra) =>
        StartAsync(dataDir, password, openFiles: null, extra);

    /// <param name="openFiles">Runs the daemon under this open-file limit (soft and hard, with prlimit).</param>
    public static Task<DaemonProcess> StartAsync(string dataDir, string password, int? openFiles, params string[] extra) =>
        StartAsync(dataDir, password, openFiles, null, extra);

    /// <param name="environment">Variables set for the daemon, such as <c>XAPI_CRASH_AT</c>.</param>
    public static Task<DaemonProcess> StartAsync(string dataDir, string password, IReadOnlyDictionary<string, string> environment, params string[] extra) =>
        StartAsync(dataDir, password, null, environment, extra);

    private static async Task<DaemonProcess> StartAsync(string dataDir, string password, int? openFiles, IReadOnlyDictionary<string, string>? environment, string[] extra)
    {
        var port = FreePort();
        var process = Process.Start(StartInfo(port, dataDir, password, extra, openFiles, environment))!;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new OutputLog();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                ready.TrySetException(new InvalidOperationException("the daemon exited before it listened:\n" + string.Join("\n", output.Lines)));
                return;
            }
            output.Add(e.Data);
            if (e.Data.Contains("listening on", StringComparison.Ordinal))
            {
                ready.TrySetResult();
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                output.Add(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
        return new DaemonProcess(process, new Uri($"http://127.0.0.1:{port}/"), output);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Waits for a daemon that is to end by itself (at a crash point): its exit code, 137 for SIGKILL.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        await _process.WaitForExitAsync().WaitAsync(timeout);
        return _process.ExitCode;
    }

    /// <summary>SIGTERM, as systemd stops the service: the daemon shuts down in order and writes what it owes.</summary>
    public async Task TerminateAsync(TimeSpan timeout)
    {
        using (var signal = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await signal.WaitForExitAsync();
        }
        await _process.WaitForExitAsync().WaitAsync(timeout);
    }

    /// <summary>SIGKILL: no shutdown, no flush, no final compaction.</summary>
    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            Kill();
        }
        _process.Dispose();
    }

    /// <summary>The daemon's lines, and waiters for a line with a given text.</summary>
    private sealed class OutputLog
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _lines = new();
        private readonly List<(string Fragment, TaskCompletionSource<string> Seen)> _waiters = [];

        public IReadOnlyCollection<string> Lines => _lines;

        public void Add(string line)
        {
            _lines.Enqueue(line);
            lock (_waiters)
            {
                foreach (var waiter in _waiters.Where(w => line.Contains(w.Fragment, StringComparison.Ordinal)).ToList())
                {
                    waiter.Seen.TrySetResult(line);
                    _waiters.Remove(waiter);
                }
            }
        }

        public Task<string> WaitForAsync(string fragment)
        {
            lock (_waiters)
            {
                if (_lines.FirstOrDefault(l => l.Contains(fragment, StringComparison.Ordinal)) is { } seen)
                {
                    return Task.FromResult(seen);
                }
                var waiter = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
                _waiters.Add((fragment, waiter));
                return waiter.Task;
            }
        }
    }
}
