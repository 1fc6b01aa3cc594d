using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Xapi.EndToEnd.Tests;

/// <summary>The real daemon as a child process, so a test can kill it with SIGKILL.</summary>
public sealed class DaemonProcess : IDisposable
{
    private readonly Process _process;

    private DaemonProcess(Process process, Uri uri)
    {
        _process = process;
        Uri = uri;
    }

    public Uri Uri { get; }

    public static Task<DaemonProcess> StartAsync(string dataDir, string password, params string[] extra) =>
        StartAsync(dataDir, password, openFiles: null, extra);

    /// <param name="openFiles">Runs the daemon under this open-file limit (soft and hard, with prlimit).</param>
    public static async Task<DaemonProcess> StartAsync(string dataDir, string password, int? openFiles, params string[] extra)
    {
        var port = FreePort();
        var start = new ProcessStartInfo(openFiles is null ? "dotnet" : "prlimit")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (openFiles is { } limit)
        {
            start.ArgumentList.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"--nofile={limit}:{limit}"));
            start.ArgumentList.Add("--");
            start.ArgumentList.Add("dotnet");
        }
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "xapi-dotnet.dll"));
        foreach (var arg in new[] { "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--listen", "127.0.0.1", "--data-dir", dataDir, "--root-password", password, "--log-file", "" }.Concat(extra))
        {
            start.ArgumentList.Add(arg);
        }
        var process = Process.Start(start)!;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                ready.TrySetException(new InvalidOperationException("the daemon exited before it listened:\n" + string.Join("\n", output)));
                return;
            }
            output.Enqueue(e.Data);
            if (e.Data.Contains("listening on", StringComparison.Ordinal))
            {
                ready.TrySetResult();
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                output.Enqueue(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
        return new DaemonProcess(process, new Uri($"http://127.0.0.1:{port}/")) { _output = output };
    }

    private System.Collections.Concurrent.ConcurrentQueue<string> _output = new();

    /// <summary>What the daemon printed so far (console log, stack traces).</summary>
    public string Output => string.Join("\n", _output);

    public bool HasExited => _process.HasExited;

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

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
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
}
