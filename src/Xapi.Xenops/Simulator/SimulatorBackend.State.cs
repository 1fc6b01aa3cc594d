using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// The simulated hypervisor outlives the daemon, as Xen does: with a state file, every change is
/// written (atomically, by rename) when the operation leaves the lock, and a new backend on the
/// same file finds the domains again — so a restarted daemon has something to reconcile with.
/// </summary>
public sealed partial class SimulatorBackend
{
    private const int StateVersion = 1;

    private static readonly JsonSerializerOptions s_stateJson = new()
    {
        Converters = { new JsonStringEnumConverter() },
        WriteIndented = false,
    };

    private GateScope Enter() => new(this);

    /// <summary>Holds the backend's lock; on leaving, writes the state file if anything changed.</summary>
    private ref struct GateScope
    {
        private readonly SimulatorBackend _owner;
        private Lock.Scope _scope;

        public GateScope(SimulatorBackend owner)
        {
            _owner = owner;
            _scope = owner._gate.EnterScope();
        }

        public void Dispose()
        {
            try
            {
                _owner.OnLeave();
            }
            finally
            {
                _scope.Dispose();
            }
        }
    }

    /// <summary>
    /// Leaving the lock after a change: the state file is written now, or, with a write delay, once
    /// for every change within it, so a busy host does not rewrite every domain on every operation.
    /// </summary>
    private void OnLeave()
    {
        if (!_dirty || _options.StatePath is null)
        {
            _dirty = false;
            return;
        }

        if (_options.StateWriteDelay <= TimeSpan.Zero || _disposed)
        {
            PersistIfDirty();
            return;
        }

        if (!_writePending)
        {
            _writePending = true;
            _stateWriter ??= new Timer(_ => WriteDeferred());
            _stateWriter.Change(_options.StateWriteDelay, Timeout.InfiniteTimeSpan);
        }
    }

    private void WriteDeferred()
    {
        lock (_gate)
        {
            _writePending = false;
            PersistIfDirty();
        }
    }

    private void PersistIfDirty()
    {
        if (!_dirty || _options.StatePath is not { } path)
        {
            _dirty = false;
            return;
        }

        _dirty = false;
        var state = new SimulatorState(
            StateVersion,
            _nextDomId,
            _sequence,
            [.. _domains.Values.OrderBy(d => d.DomId).Select(d => new PersistedDomain(
                d.Config,
                d.DomId,
                d.Power,
                d.Reason,
                d.Built,
                d.ActualKib,
                d.TargetKib,
                d.OverheadKib,
                d.DynamicMin,
                d.DynamicMax,
                d.VcpusOnline,
                [.. d.Vbds],
                [.. d.Vifs.Values],
                d.Agent is null ? null : new Dictionary<string, string>(d.Agent),
                d.Counter(_simulatedNow, _options.GuestCounterPeriod),
                d.ConsoleText))]);
        var temporary = path + ".tmp";
        try
        {
            File.WriteAllBytes(temporary, JsonSerializer.SerializeToUtf8Bytes(state, s_stateJson));
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The operation itself succeeded; failing it now would leave the domain changed and
            // the caller told otherwise. The next change retries the write.
            _dirty = true;
            LogStateWriteFailed(e, path);
        }
    }

    private void Load(string path)
    {
        SimulatorState state;
        try
        {
            state = JsonSerializer.Deserialize<SimulatorState>(File.ReadAllBytes(path), s_stateJson)
                ?? throw new InvalidDataException("empty");
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or NotSupportedException)
        {
            throw new InvalidDataException($"the simulator state file {path} cannot be read: {e.Message}", e);
        }

        if (state.Version != StateVersion)
        {
            throw new InvalidDataException($"the simulator state file {path} has version {state.Version}; this backend reads version {StateVersion}");
        }

        _nextDomId = state.NextDomId;
        _sequence = state.Sequence;
        foreach (var saved in state.Domains)
        {
            var domain = new SimDomain(saved.Config, saved.DomId, saved.OverheadKib, _simulatedNow)
            {
                Power = saved.Power,
                Reason = saved.Reason,
                Built = saved.Built,
                ActualKib = saved.ActualKib,
                TargetKib = saved.TargetKib,
                DynamicMin = saved.DynamicMin,
                DynamicMax = saved.DynamicMax,
                VcpusOnline = saved.VcpusOnline,
                CounterBase = saved.GuestCounter,
                Agent = saved.Agent is null ? null : new SortedDictionary<string, string>(saved.Agent, StringComparer.Ordinal),
                Workload = _options.WorkloadFactory?.Invoke(saved.Config),
            };
            domain.Vbds.AddRange(saved.Vbds);
            foreach (var vif in saved.Vifs)
            {
                domain.Vifs.Add(vif.Device, vif);
            }

            domain.ConsoleReplace(saved.ConsoleText, _options.ConsoleCapacity);
            if (domain.Power == DomainPowerState.Running)
            {
                domain.RunningSince = _simulatedNow;
            }

            _domains.Add(saved.Config.Uuid, domain);
            // A guest whose agent had not started yet when the daemon went away still starts it.
            domain.AgentScheduled = domain.Agent is not null || domain.Power == DomainPowerState.Running;
            if (domain.Agent is null && domain.Power == DomainPowerState.Running)
            {
                Schedule(_options.GuestAgentDelay, domain, ScheduledKind.AgentStarts, null);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "The simulator state file {Path} could not be written; retrying at the next change")]
    private partial void LogStateWriteFailed(Exception exception, string path);

    private sealed record SimulatorState(int Version, int NextDomId, long Sequence, List<PersistedDomain> Domains);

    private sealed record PersistedDomain(
        DomainConfig Config,
        int DomId,
        DomainPowerState Power,
        ShutdownReason? Reason,
        bool Built,
        long ActualKib,
        long TargetKib,
        long OverheadKib,
        long DynamicMin,
        long DynamicMax,
        int VcpusOnline,
        List<VbdState> Vbds,
        List<VifState> Vifs,
        Dictionary<string, string>? Agent,
        long GuestCounter,
        string ConsoleText);
}
