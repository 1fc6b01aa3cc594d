using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

/// <summary>
/// The published daemon (<c>xapi-dotnet.dll</c>) as a child process of the scenario, run by the
/// same <c>dotnet</c> host: ready once it prints that it listens, stopped with SIGTERM as a
/// service manager stops it. Its warnings and errors are copied to the console as they come
/// (prefixed <c>DAEMON</c>), every line is kept for the end of a failed run.
/// </summary>
internal sealed partial class GuestDaemon : IAsyncDisposable
{
    private const int SigTerm = 15;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private GuestDaemon(Process process, Uri uri)
    {
        _process = process;
        Uri = uri;
    }

    public Uri Uri { get; }

    public IReadOnlyCollection<string> Lines => _lines;

    public bool HasExited => _process.HasExited;

    /// <summary>Starts the daemon on 127.0.0.1:<paramref name="port"/> with its journal database in <paramref name="dataDir"/>.</summary>
    public static GuestDaemon Start(string daemonDll, string dataDir, int port, string rootPassword)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // As the project's in-process test daemon: a full-strength root password hash costs
        // seconds of emulated CPU at first boot and at every login, and proves nothing here.
        start.Environment["XAPI_PASSWORD_HASH_ITERATIONS"] = "1000";
        start.ArgumentList.Add(daemonDll);
        foreach (var argument in new[]
        {
            "--http-port", port.ToString(CultureInfo.InvariantCulture), "--listen", "127.0.0.1", "--data-dir", dataDir,
            "--root-password", rootPassword, "--log-file", "", "--nbd-port", "-1",
        })
        {
            start.ArgumentList.Add(argument);
        }
        var process = Process.Start(start) ?? throw new InvalidOperationException("the daemon did not start");
        var daemon = new GuestDaemon(process, new Uri($"http://127.0.0.1:{port}/"));
        process.OutputDataReceived += (_, e) => daemon.Add(e.Data);
        process.ErrorDataReceived += (_, e) => daemon.Add(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return daemon;
    }

    private void Add(string? line)
    {
        if (line is null)
        {
            _listening.TrySetException(new InvalidOperationException("the daemon closed its output before it listened"));
            return;
        }
        _lines.Enqueue(line);
        if (line.Contains(" WRN] ", StringComparison.Ordinal) || line.Contains(" ERR] ", StringComparison.Ordinal) || line.Contains(" FTL] ", StringComparison.Ordinal)
            || line.StartsWith("xapi-dotnet:", StringComparison.Ordinal))
        {
            Console.WriteLine($"DAEMON {line}");
        }
        if (line.Contains("listening on", StringComparison.Ordinal))
        {
            _listening.TrySetResult();
        }
    }

    /// <summary>Waits until the daemon serves; fails at once if it exits first.</summary>
    public async Task WaitUntilListeningAsync(TimeSpan timeout)
    {
        var exited = _process.WaitForExitAsync();
        var first = await Task.WhenAny(_listening.Task, exited).WaitAsync(timeout);
        if (first == exited && !_listening.Task.IsCompletedSuccessfully)
        {
            throw new InvalidOperationException($"the daemon exited with status {_process.ExitCode} before it listened");
        }
        await _listening.Task;
    }

    /// <summary>The daemon's peak resident memory (VmHWM), from /proc; null once it has exited.</summary>
    public string? PeakMemory()
    {
        try
        {
            return File.ReadLines($"/proc/{_process.Id}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal))?["VmHWM:".Length..].Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>SIGTERM, then its exit status (null when it is still running after <paramref name="timeout"/>, and is killed).</summary>
    public async Task<int?> StopAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            _ = Kill(_process.Id, SigTerm);
        }
        try
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
            return _process.ExitCode;
        }
        catch (TimeoutException)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
