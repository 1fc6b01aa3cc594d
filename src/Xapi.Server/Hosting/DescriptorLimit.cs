using System.Runtime.InteropServices;

namespace Xapi.Server.Hosting;

/// <summary>
/// The process's open-file limit (<c>RLIMIT_NOFILE</c>), which bounds how many connections it
/// can hold: every connection is a descriptor, and so is every file, pipe and epoll instance
/// the runtime needs to keep working.
/// </summary>
public static class DescriptorLimit
{
    private const int RlimitNofile = 7; // Linux, every architecture .NET runs on

    /// <summary>Descriptors kept back from connections for the journal, logs, runtime and outgoing connections.</summary>
    public const int Reserve = 128;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [DllImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static extern int GetRLimit(int resource, out RLimit limit);

    [DllImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static extern int SetRLimit(int resource, in RLimit limit);

    /// <summary>
    /// Raises the soft limit to the hard one (a daemon should use what it is allowed) and returns
    /// the soft limit in force; null where the limit cannot be read (not Linux).
    /// </summary>
    public static long? RaiseToHardLimit()
    {
        if (!OperatingSystem.IsLinux() || GetRLimit(RlimitNofile, out var limit) != 0)
        {
            return null;
        }
        if (limit.Current < limit.Maximum)
        {
            var raised = limit with { Current = limit.Maximum };
            if (SetRLimit(RlimitNofile, raised) == 0)
            {
                limit = raised;
            }
        }
        return limit.Current > long.MaxValue ? long.MaxValue : (long)limit.Current;
    }

    /// <summary>
    /// The connections each listener may hold: the configured limit, lowered so that all
    /// listeners together leave <see cref="Reserve"/> descriptors free.
    /// </summary>
    public static int ConnectionsPerListener(int configured, int listeners, long? descriptors)
    {
        if (descriptors is not { } available)
        {
            return configured;
        }
        var share = (available - Reserve) / Math.Max(1, listeners);
        return (int)Math.Clamp(share, 1, configured);
    }
}
