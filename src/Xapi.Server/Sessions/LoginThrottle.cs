using System.Net;
using System.Net.Sockets;

namespace Xapi.Server.Sessions;

/// <summary>
/// Keeps password checks from starving every other client. A check is deliberately slow
/// (PBKDF2), so: at most a few run at once (real hosts also throttle local authentication),
/// and each source address has one login attempt in progress at a time, its failure delay
/// included, so one client opening hundreds of connections gets no more guesses than one
/// connection would. IPv6 sources count per /64, the block one host usually holds.
/// </summary>
public sealed class LoginThrottle(int concurrentChecks)
{
    private readonly SemaphoreSlim _checks = new(Math.Max(1, concurrentChecks), Math.Max(1, concurrentChecks));
    private readonly Dictionary<IPAddress, SourceTurn> _sources = [];

    /// <summary>Waits for the source's turn; dispose the result when the attempt (and its delay) is over.</summary>
    public async ValueTask<IDisposable> EnterSourceAsync(IPAddress? source, CancellationToken cancellationToken)
    {
        var key = KeyOf(source);
        SourceTurn turn;
        lock (_sources)
        {
            if (!_sources.TryGetValue(key, out turn!))
            {
                _sources[key] = turn = new SourceTurn(this, key);
            }
            turn.Users++;
        }
        try
        {
            await turn.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            turn.Leave(entered: false);
            throw;
        }
        return turn;
    }

    /// <summary>Runs a password check when a check slot is free.</summary>
    public async ValueTask<bool> CheckAsync(Func<bool> check, CancellationToken cancellationToken)
    {
        await _checks.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // On a thread of its own, not the thread pool's: a check holds a core for tens of
            // milliseconds, and the pool's few threads are what every other client waits on.
            return await Task.Factory.StartNew(check, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
        }
        finally
        {
            _checks.Release();
        }
    }

    /// <summary>How many sources have an attempt in progress or waiting (tests watch it drain).</summary>
    public int ActiveSources
    {
        get
        {
            lock (_sources)
            {
                return _sources.Count;
            }
        }
    }

    private static IPAddress KeyOf(IPAddress? source)
    {
        if (source is null)
        {
            return IPAddress.None; // the local socket: one source
        }
        if (source.IsIPv4MappedToIPv6)
        {
            return source.MapToIPv4();
        }
        if (source.AddressFamily == AddressFamily.InterNetworkV6)
        {
            var bytes = source.GetAddressBytes();
            Array.Clear(bytes, 8, 8);
            return new IPAddress(bytes);
        }
        return source;
    }

    private sealed class SourceTurn(LoginThrottle owner, IPAddress key) : IDisposable
    {
        public readonly SemaphoreSlim Gate = new(1, 1);
        public int Users;

        public void Dispose() => Leave(entered: true);

        public void Leave(bool entered)
        {
            if (entered)
            {
                Gate.Release();
            }
            lock (owner._sources)
            {
                if (--Users == 0)
                {
                    owner._sources.Remove(key);
                }
            }
        }
    }
}
