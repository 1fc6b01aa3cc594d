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

    /// <summary>Whether the daemon has stopped (crashed, when the test did not kill it).</summary>
    public bool HasExited => _process.HasExited;

    public static async Task<DaemonProcess> StartAsync(string dataDir, string password, params string[] extra)
    {
        var port = FreePort();
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
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
        return new DaemonProcess(process, new Uri($"http://127.0.0.1:{port}/"));
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
