using System.Diagnostics;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// The simulator's only source of time: guest agents appearing, guests acknowledging shutdown
/// requests and balloons moving all happen at simulated instants, when the clock says time has
/// passed. Tests drive a <see cref="ManualClock"/>, so the same script gives the same events.
/// </summary>
public interface ISimulationClock
{
    /// <summary>Time since the clock's origin; never goes backwards.</summary>
    TimeSpan Now { get; }

    /// <summary>Raised after <see cref="Now"/> moved forward; the simulator catches up then.</summary>
    event EventHandler? Advanced;
}

/// <summary>A clock that moves only when told to; <see cref="Advance"/> runs the simulation synchronously.</summary>
public sealed class ManualClock : ISimulationClock
{
    private readonly Lock _gate = new();
    private TimeSpan _now;

    public TimeSpan Now
    {
        get
        {
            lock (_gate)
            {
                return _now;
            }
        }
    }

    public event EventHandler? Advanced;

    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        lock (_gate)
        {
            _now += by;
        }

        Advanced?.Invoke(this, EventArgs.Empty);
    }
}

/// <summary>Wall-clock time from a monotonic stopwatch, ticking at a fixed interval (the daemon's default).</summary>
public sealed class RealTimeClock : ISimulationClock, IDisposable
{
    private readonly Stopwatch _stopwatch = Stopwatch.StartNew();
    private readonly Timer _timer;

    public RealTimeClock(TimeSpan tickInterval)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(tickInterval, TimeSpan.Zero);
        _timer = new Timer(_ => Advanced?.Invoke(this, EventArgs.Empty), null, tickInterval, tickInterval);
    }

    public TimeSpan Now => _stopwatch.Elapsed;

    public event EventHandler? Advanced;

    public void Dispose() => _timer.Dispose();
}
