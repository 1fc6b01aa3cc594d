using System.Diagnostics;
using System.Runtime.Versioning;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>
/// dom0's Linux bridges. A network without a physical interface (an internal network) has no
/// bridge until a VM needs it: real hosts have xcp-networkd create it as the VM starts, and so
/// does this backend, through iproute2's <c>ip</c> (the tool Xen's vif-bridge script uses too).
/// </summary>
public static class LinuxBridges
{
    /// <summary>Linux's IFNAMSIZ less its terminating NUL.</summary>
    private const int MaxNameLength = 15;

    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);

    [SupportedOSPlatform("linux")]
    public static bool Exists(string name) => Directory.Exists(Path.Combine("/sys/class/net", name));

    /// <summary>Creates the bridge, up and without addresses, unless an interface of that name exists.</summary>
    [SupportedOSPlatform("linux")]
    public static void EnsureExists(string name)
    {
        if (!IsValidName(name))
        {
            throw new ArgumentException($"'{name}' cannot name a Linux network interface", nameof(name));
        }
        if (Exists(name))
        {
            return;
        }
        Run("link", "add", "name", name, "type", "bridge");
        Run("link", "set", "dev", name, "up");
    }

    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= MaxNameLength && name is not "." and not ".."
        && name.All(c => c > ' ' && c < 0x7f && c is not '/' and not ':');

    private static void Run(params string[] arguments)
    {
        var start = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start ip");
        var stderr = process.StandardError.ReadToEndAsync();
        _ = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(ToolTimeout))
        {
            process.Kill();
            throw new InvalidOperationException($"ip {string.Join(' ', arguments)} did not finish in {ToolTimeout.TotalSeconds} s");
        }
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"ip {string.Join(' ', arguments)} failed (exit {process.ExitCode}): {stderr.Result.Trim()}");
        }
    }
}
