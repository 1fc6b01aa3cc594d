using Xapi.Database;
using Xapi.Model;

namespace Xapi.Server.Events;

/// <summary>
/// Wakes blocked <c>event.from</c> and <c>event.next</c> calls when a commit touches a class they
/// watch, or ends their session. A waiter costs the same however many commits go by: it is woken
/// only for its own classes, and holds no timer of its own (its caller holds one per call).
/// </summary>
public sealed class EventHub
{
    private readonly object _lock = new();

    // Per class ordinal: who waits for it. Writes to classes nobody watches cost one comparison each.
    private readonly HashSet<Waiter>?[] _byClass = new HashSet<Waiter>?[ApiSchema.Classes.Length];

    // Per session: who waits on its behalf, so that logging out ends their wait.
    private readonly Dictionary<string, HashSet<Waiter>> _bySession = new(StringComparer.Ordinal);

    // The newest generation already looked at: the visible snapshot may advance by several at once.
    private long _published;

    public EventHub(XapiDatabase database)
    {
        _published = database.Snapshot.Generation;
        database.Committed += OnCommitted;
    }

    /// <summary>How many calls wait right now.</summary>
    public int WaiterCount
    {
        get
        {
            lock (_lock)
            {
                return _bySession.Values.Sum(w => w.Count);
            }
        }
    }

    /// <summary>
    /// Registers a waiter for <paramref name="classes"/> on behalf of <paramref name="session"/>;
    /// dispose it to unregister. Call <see cref="Waiter.Arm"/> before reading the snapshot, so that
    /// no commit can fall between the read and the wait.
    /// </summary>
    public Waiter Watch(IEnumerable<ClassMeta> classes, string session)
    {
        var ordinals = classes.Select(c => c.Ordinal).Distinct().ToArray();
        var waiter = new Waiter(this, ordinals, session);
        lock (_lock)
        {
            foreach (var ordinal in ordinals)
            {
                (_byClass[ordinal] ??= []).Add(waiter);
            }
            if (!_bySession.TryGetValue(session, out var sessionWaiters))
            {
                _bySession[session] = sessionWaiters = [];
            }
            sessionWaiters.Add(waiter);
        }
        return waiter;
    }

    private void Unwatch(Waiter waiter)
    {
        lock (_lock)
        {
            foreach (var ordinal in waiter.Ordinals)
            {
                if (_byClass[ordinal] is { } set && set.Remove(waiter) && set.Count == 0)
                {
                    _byClass[ordinal] = null;
                }
            }
            if (_bySession.TryGetValue(waiter.Session, out var sessionWaiters) && sessionWaiters.Remove(waiter) && sessionWaiters.Count == 0)
            {
                _bySession.Remove(waiter.Session);
            }
        }
    }

    // Called under the database's write lock, in generation order.
    private void OnCommitted(DbSnapshot snapshot)
    {
        lock (_lock)
        {
            var since = _published;
            _published = snapshot.Generation;
            var classes = ApiSchema.Classes;
            for (var ordinal = 0; ordinal < _byClass.Length; ordinal++)
            {
                if (_byClass[ordinal] is { } waiters && snapshot.ChangedSince(classes[ordinal], since))
                {
                    foreach (var waiter in waiters)
                    {
                        waiter.Wake();
                    }
                }
            }
            if (_bySession.Count > 0 && snapshot.ChangedSince(SessionRef.Class, since))
            {
                foreach (var (session, waiters) in _bySession)
                {
                    if (!snapshot.Exists(SessionRef.Class, session))
                    {
                        foreach (var waiter in waiters)
                        {
                            waiter.Wake();
                        }
                    }
                }
            }
        }
    }

    /// <summary>One blocked call's registration: a few references, whatever the write rate.</summary>
    public sealed class Waiter : IDisposable
    {
        private readonly EventHub _hub;
        private TaskCompletionSource _signal = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _disposed;

        internal Waiter(EventHub hub, int[] ordinals, string session)
        {
            _hub = hub;
            Ordinals = ordinals;
            Session = session;
        }

        internal int[] Ordinals { get; }

        internal string Session { get; }

        /// <summary>A task that completes at the next relevant commit (or <see cref="Wake"/>) after this call.</summary>
        public Task Arm()
        {
            var current = Volatile.Read(ref _signal);
            if (!current.Task.IsCompleted)
            {
                return current.Task;
            }
            var next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // A concurrent Wake completes either the old signal (then the new one is fresh and
            // the caller reads a snapshot that includes the commit) or the new one.
            return Interlocked.CompareExchange(ref _signal, next, current) == current ? next.Task : Volatile.Read(ref _signal).Task;
        }

        /// <summary>Ends the current wait: a relevant commit, the timeout, a cancelled call, a changed subscription.</summary>
        public void Wake() => Volatile.Read(ref _signal).TrySetResult();

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                _hub.Unwatch(this);
                Wake();
            }
        }
    }
}
