using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Hosting;

namespace Xapi.Server.Pool;

/// <summary>
/// The master's view of which members are alive, kept in <c>host_metrics.live</c>. A member
/// always holds a request for changes open at the master, or is about to make the next one
/// (<see cref="PoolMembership"/>): that is its heartbeat. A member with none open and none
/// begun for <see cref="ServerOptions.MemberLivenessTimeout"/> is marked dead; its next request
/// marks it alive again. A member killed outright is seen at once (its held connection closes),
/// so it is marked within the timeout. Real hosts without HA mark a member dead only after
/// 600 s. As on real hosts, the VMs a dead member ran keep their power state until it returns
/// or is declared dead.
/// </summary>
public sealed class MemberLiveness : IDisposable
{
    private readonly XapiDatabase _database;
    private readonly PoolMembership _membership;
    private readonly TimeProvider _time;
    private readonly TimeSpan _timeout;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, Heartbeat> _members = new(StringComparer.Ordinal);
    private readonly DateTimeOffset _started;
    private readonly ITimer _timer;

    public MemberLiveness(XapiDatabase database, PoolMembership membership, ServerOptions options, TimeProvider time, ILogger<MemberLiveness> logger)
    {
        _database = database;
        _membership = membership;
        _time = time;
        _timeout = options.MemberLivenessTimeout;
        _logger = logger;
        _started = time.GetUtcNow();
        var period = _timeout / 4;
        _timer = time.CreateTimer(_ => Check(), null, period, period);
    }

    /// <summary>A member's request began; disposing the result says it ended.</summary>
    public IDisposable Heard(string host)
    {
        var heartbeat = _members.GetOrAdd(host, _ => new Heartbeat());
        Interlocked.Increment(ref heartbeat.Open);
        heartbeat.Touch(_time);
        if (IsMarkedDead(host))
        {
            Check();
        }
        return new Ending(heartbeat, _time);
    }

    private bool IsMarkedDead(string host) =>
        _database.Snapshot.TryGet(new HostRef(host), out HostRecord record) && _database.Snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics) && !metrics.Live;

    private void Check()
    {
        if (_membership.IsMember)
        {
            return;
        }
        try
        {
            var now = _time.GetUtcNow();
            var snapshot = _database.Snapshot;
            var changes = new List<(HostMetricsRef Metrics, bool Live, string Name)>();
            foreach (var host in snapshot.All<HostRecord>())
            {
                if (host.Ref.Value == _membership.ThisHost || !snapshot.TryGet(host.Metrics, out HostMetricsRecord metrics))
                {
                    continue;
                }
                // Members not heard from since this master started have until the timeout to be.
                var alive = _members.TryGetValue(host.Ref.Value, out var heartbeat)
                    ? heartbeat.IsAlive(now, _timeout)
                    : now - _started < _timeout;
                if (alive != metrics.Live)
                {
                    changes.Add((host.Metrics, alive, host.NameLabel));
                }
            }
            if (changes.Count == 0)
            {
                return;
            }
            _database.Write(tx =>
            {
                foreach (var (metrics, live, _) in changes)
                {
                    if (tx.TryGet(metrics, out HostMetricsRecord _))
                    {
                        tx.Update(metrics, m => m.Live = live);
                    }
                }
            });
            foreach (var (_, live, name) in changes)
            {
                if (live)
                {
                    _logger.LogInformation("Pool member {Host} is alive again", name);
                }
                else
                {
                    _logger.LogWarning("Pool member {Host} has not been heard from for {Timeout}: marked dead", name, _timeout);
                }
            }
        }
        catch (Exception e) when (e is ObjectDisposedException or Xapi.Database.Replication.ReplicaWriteException)
        {
            // Stopping, or no longer the master: nothing to mark.
        }
    }

    public void Dispose() => _timer.Dispose();

    private sealed class Heartbeat
    {
        public int Open;
        private long _lastTicks;

        public void Touch(TimeProvider time) => Interlocked.Exchange(ref _lastTicks, time.GetUtcNow().UtcTicks);

        public bool IsAlive(DateTimeOffset now, TimeSpan timeout) =>
            Volatile.Read(ref Open) > 0 || now.UtcTicks - Interlocked.Read(ref _lastTicks) < timeout.Ticks;
    }

    private sealed class Ending(Heartbeat heartbeat, TimeProvider time) : IDisposable
    {
        private int _ended;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _ended, 1) == 0)
            {
                heartbeat.Touch(time);
                Interlocked.Decrement(ref heartbeat.Open);
            }
        }
    }
}
