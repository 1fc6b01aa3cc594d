using System.Collections.Concurrent;
using System.Diagnostics;

namespace Xapi.Storage;

/// <summary>The outcome of one run of a storage tool.</summary>
public sealed record ToolResult(int ExitCode, string Output, string Error);

/// <summary>
/// Runs the storage tools (qemu-img, lvm): arguments as a list (no shell), stdin closed so no
/// prompt waits, and <c>setpriv --pdeathsig KILL</c> so a killed daemon leaves no tool running
/// on with an image or volume group locked; cancelled, the tool is killed.
/// </summary>
public static class ToolProcess
{
    public static async Task<ToolResult> RunAsync(string tool, IReadOnlyList<string> arguments, IReadOnlyDictionary<string, string>? environment, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }
        foreach (var argument in (string[])["--pdeathsig", "KILL", tool, .. arguments])
        {
            start.ArgumentList.Add(argument);
        }
        using var process = await ChildProcessLauncher.StartAsync(start).ConfigureAwait(false);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return new ToolResult(process.ExitCode, await stdout.ConfigureAwait(false), (await stderr.ConfigureAwait(false)).Trim());
    }
}

/// <summary>
/// Starts child processes from one thread that lives as long as the process. PR_SET_PDEATHSIG
/// fires when the thread that forked the child exits, not the process; the thread pool
/// retires idle threads, which would SIGKILL a qemu-nbd started from one of them.
/// </summary>
internal static class ChildProcessLauncher
{
    private static readonly BlockingCollection<(ProcessStartInfo Start, TaskCompletionSource<Process> Started)> Requests = StartThread();

    public static Task<Process> StartAsync(ProcessStartInfo start)
    {
        var started = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((start, started));
        return started.Task;
    }

    private static BlockingCollection<(ProcessStartInfo, TaskCompletionSource<Process>)> StartThread()
    {
        var requests = new BlockingCollection<(ProcessStartInfo, TaskCompletionSource<Process>)>();
        var thread = new Thread(() =>
        {
            foreach (var (start, started) in requests.GetConsumingEnumerable())
            {
                try
                {
                    started.SetResult(Process.Start(start) ?? throw new InvalidOperationException($"{start.FileName} did not start"));
                }
                catch (Exception ex)
                {
                    started.SetException(ex);
                }
            }
        })
        {
            IsBackground = true,
            Name = "child process launcher",
        };
        thread.Start();
        return requests;
    }
}
