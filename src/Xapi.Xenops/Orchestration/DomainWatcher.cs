using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Xapi.Xenops.Orchestration;

/// <summary>Where a <see cref="DomainWatcher"/> delivers each backend event before anyone waiting on it wakes.</summary>
public interface IDomainEventSink
{
    ValueTask OnEventAsync(DomainEvent domainEvent, CancellationToken cancellationToken);

    /// <summary>Events were lost (the reader fell behind): the sink must re-read the backend's whole state.</summary>
    ValueTask ResynchroniseAsync(CancellationToken cancellationToken);
}

/// <summary>
/// The one reader of a backend's event stream (xapi's xenopsd event thread): hands every event to
/// the sink in order, then wakes the operations waiting for it (a guest acknowledging a shutdown
/// request). One subscription serves every operation, so a host with hundreds of domains does not
/// hold hundreds of streams. Events that queued up while the sink was busy are delivered newest
/// per domain (each carries the domain's whole state), so a burst of balloon changes across a
/// dense host costs one fold per domain rather than one per change; shutdowns are always delivered.
/// </summary>
public sealed partial class DomainWatcher(IHypervisor hypervisor, IDomainEventSink sink, ILogger<DomainWatcher> logger) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<Guid, List<Waiter>> _waiters = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly Channel<DomainEvent> _queued = Channel.CreateUnbounded<DomainEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private Task? _loop;
    private Task? _delivery;

    /// <summary>Subscribes now (no event after this call is missed) and reads in the background.</summary>
    public void Start()
    {
        var stream = hypervisor.WatchAsync(_stopping.Token);
        _loop = Task.Run(() => ReadAsync(stream));
        _delivery = Task.Run(DeliverQueuedAsync);
    }

    /// <summary>
    /// Completes with the first event about <paramref name="uuid"/> that satisfies
    /// <paramref name="condition"/>, from this call on. Register before asking the backend for the
    /// change, so the event cannot slip past.
    /// </summary>
    public Task<DomainEvent> WaitForAsync(Guid uuid, Func<DomainEvent, bool> condition, CancellationToken cancellationToken)
    {
        var waiter = new Waiter(condition);
        var list = _waiters.GetOrAdd(uuid, _ => []);
        lock (list)
        {
            list.Add(waiter);
        }

        if (cancellationToken.CanBeCanceled)
        {
            var registration = cancellationToken.Register(() => waiter.Completion.TrySetCanceled(cancellationToken));
            waiter.Completion.Task.ContinueWith(_ => registration.Dispose(), TaskScheduler.Default);
        }

        waiter.Completion.Task.ContinueWith(_ => Remove(uuid, waiter), TaskScheduler.Default);
        return waiter.Completion.Task;
    }

    private void Remove(Guid uuid, Waiter waiter)
    {
        if (_waiters.TryGetValue(uuid, out var list))
        {
            lock (list)
            {
                list.Remove(waiter);
            }
        }
    }

    private async Task ReadAsync(IAsyncEnumerable<DomainEvent> stream)
    {
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                await foreach (var domainEvent in stream.WithCancellation(_stopping.Token))
                {
                    _queued.Writer.TryWrite(domainEvent);
                }

                return;
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (EventStreamOverflowException e)
            {
                LogOverflow(e.Capacity);
                stream = hypervisor.WatchAsync(_stopping.Token);
                await ResynchroniseAsync();
            }
            catch (Exception e)
            {
                // The stream itself failed: read it again, and re-read the whole state in case events were lost.
                LogStreamFailed(e);
                stream = hypervisor.WatchAsync(_stopping.Token);
                await ResynchroniseAsync();
            }
        }
    }

    private async Task ResynchroniseAsync()
    {
        try
        {
            await sink.ResynchroniseAsync(_stopping.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogSinkFailed(e, 0);
        }
    }

    private async Task DeliverQueuedAsync()
    {
        var batch = new List<DomainEvent>();
        var newest = new Dictionary<Guid, long>();
        try
        {
            while (await _queued.Reader.WaitToReadAsync(_stopping.Token))
            {
                batch.Clear();
                newest.Clear();
                while (batch.Count < MaxBatch && _queued.Reader.TryRead(out var queued))
                {
                    batch.Add(queued);
                    newest[queued.State.Uuid] = queued.Sequence;
                }

                // The sink sees a batch before anyone waiting on it wakes, as it sees a single event.
                foreach (var domainEvent in batch)
                {
                    if (domainEvent.Sequence == newest[domainEvent.State.Uuid] || domainEvent.Kind == DomainEventKind.Shutdown)
                    {
                        await DeliverAsync(domainEvent);
                    }
                }

                foreach (var domainEvent in batch)
                {
                    Wake(domainEvent);
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
    }

    // How many queued events one pass folds at most, so waiters are not held back by a long burst.
    private const int MaxBatch = 4096;

    private async Task DeliverAsync(DomainEvent domainEvent)
    {
        try
        {
            await sink.OnEventAsync(domainEvent, _stopping.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // One bad event must not stop the stream: the next event of the same domain carries its whole state.
            LogSinkFailed(e, domainEvent.Sequence);
        }
    }

    private void Wake(DomainEvent domainEvent)
    {
        if (!_waiters.TryGetValue(domainEvent.State.Uuid, out var list))
        {
            return;
        }

        Waiter[] candidates;
        lock (list)
        {
            candidates = [.. list];
        }

        foreach (var waiter in candidates)
        {
            if (waiter.Condition(domainEvent))
            {
                waiter.Completion.TrySetResult(domainEvent);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        _queued.Writer.TryComplete();
        if (_delivery is not null)
        {
            await _delivery.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        foreach (var list in _waiters.Values)
        {
            lock (list)
            {
                foreach (var waiter in list)
                {
                    waiter.Completion.TrySetCanceled();
                }
            }
        }

        _stopping.Dispose();
    }

    private sealed class Waiter(Func<DomainEvent, bool> condition)
    {
        public Func<DomainEvent, bool> Condition { get; } = condition;

        public TaskCompletionSource<DomainEvent> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The backend's event stream overflowed ({Capacity} events); re-reading every domain")]
    private partial void LogOverflow(int capacity);

    [LoggerMessage(Level = LogLevel.Error, Message = "The backend's event stream failed; subscribing again and re-reading every domain")]
    private partial void LogStreamFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "Folding backend event {Sequence} failed")]
    private partial void LogSinkFailed(Exception exception, long sequence);
}
