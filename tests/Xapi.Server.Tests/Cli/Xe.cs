using System.Diagnostics;
using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>What one run of the built <c>xe</c> printed and how it exited.</summary>
public sealed record XeResult(int ExitCode, string Stdout, string Stderr)
{
    /// <summary>Stdout lines without the trailing empty one.</summary>
    public IReadOnlyList<string> Lines => Stdout.TrimEnd('\n').Split('\n');

    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}--- stderr\n{Stderr}";
}

/// <summary>Runs the <c>xe</c> executable built beside the tests as a real process.</summary>
public static class Xe
{
    public static string Executable { get; } = Path.Combine(AppContext.BaseDirectory, "xe");

    /// <summary>Runs xe with exactly these arguments, with HOME in an empty directory (no ~/.xe) unless one is given.</summary>
    public static async Task<XeResult> RunRawAsync(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null,
        string? stdin = null, string? workingDirectory = null, TimeSpan? timeout = null)
    {
        var start = new ProcessStartInfo(Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        start.Environment["HOME"] = EmptyHome.Value;
        start.Environment.Remove("XE_EXTRA_ARGS");
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
        }
        process.StandardInput.Close();
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"xe {string.Join(' ', start.ArgumentList)} did not exit; stderr so far: {(stderr.IsCompleted ? stderr.Result : "")}");
        }
        return new XeResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs xe against the daemon as root over plain HTTP, as an administrator's script would.</summary>
    public static Task<XeResult> RunAsync(TestDaemon daemon, params string[] args) =>
        RunRawAsync([.. args, .. ConnectionArgs(daemon)]);

    public static string[] ConnectionArgs(TestDaemon daemon) =>
        ["-s", daemon.Uri.Host, "-p", daemon.Uri.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-u", "root", "-pw", TestDaemon.Password, "--nossl"];

    private static readonly Lazy<string> EmptyHome = new(() => Directory.CreateTempSubdirectory("xe-home-").FullName);
}

/// <summary>A simulated host with a daemon for a fixture's xe tests; <see cref="XeAsync"/> runs the built xe against it.</summary>
public abstract class XeFixture(Action<ServerOptions>? configure = null) : SimulatedHostFixture(configure)
{
    protected Task<XeResult> XeAsync(params string[] args) => Xe.RunAsync(Daemon, args);

    /// <summary>Runs xe and expects exit status 0; returns stdout.</summary>
    protected async Task<string> XeOkAsync(params string[] args)
    {
        var result = await XeAsync(args);
        Assert.That(result.ExitCode, Is.Zero, result.ToString());
        return result.Stdout;
    }
}
