namespace Xapi.Server.Hosting;

/// <summary>
/// Lets a kind of log line through at most so many times per window, and counts the rest, so
/// that anyone can make the daemon log something once but nobody can make it log without end
/// (failed logins and unparseable requests need no credentials).
/// </summary>
public sealed class LogRateLimit(int perWindow, TimeSpan window)
{
    private readonly object _lock = new();
    private long _windowStart = long.MinValue;
    private int _count;
    private long _suppressed;

    /// <summary>True when the line may be written; <paramref name="suppressed"/> then says how many were left out before it.</summary>
    public bool TryEnter(out long suppressed)
    {
        lock (_lock)
        {
            var now = Environment.TickCount64;
            if (_windowStart == long.MinValue || now - _windowStart >= (long)window.TotalMilliseconds)
            {
                _windowStart = now;
                _count = 0;
            }
            if (_count < perWindow)
            {
                _count++;
                suppressed = _suppressed;
                _suppressed = 0;
                return true;
            }
            _suppressed++;
            suppressed = 0;
            return false;
        }
    }
}
