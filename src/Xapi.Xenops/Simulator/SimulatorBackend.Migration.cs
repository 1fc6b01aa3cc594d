using System.Diagnostics;
using Xapi.Xenops.Memory;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// Live migration as libxc's save does it: log-dirty mode on, every page sent while the guest runs,
/// then rounds sending what it wrote meanwhile, until little is left or the rounds run out; then
/// the guest is paused and the rest goes with its device state (stop and copy).
/// </summary>
public sealed partial class SimulatorBackend
{
    /// <summary>The simulated guests' page size, bytes: memory rates and working sets are counted in these.</summary>
    public const int PageSize = GuestMemory.PageSize;

    public async ValueTask<MigrationReport> MigrateSendAsync(Guid uuid, Stream destination, Action<double>? progress, CancellationToken cancellationToken = default)
    {
        GuestMemory memory;
        int domId;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (!domain.Built || domain.Power is not (DomainPowerState.Running or DomainPowerState.Paused))
            {
                throw new DomainStateException(uuid, "migrate", "a built domain that is running or paused", domain.Power);
            }

            domId = domain.DomId;
            if (domain.Memory is null)
            {
                domain.Memory = new GuestMemory(GuestMemory.SeedOf(uuid), GuestMemory.PagesOf(MemoryModel.BytesOfKib(domain.ActualKib)));
                domain.MemoryWrittenUpTo = _simulatedNow;
            }

            memory = domain.Memory;
            WriteMemory(domain);
            memory.StartLogDirty();
        }

        var writer = new MigrationStream.Writer(destination);
        var rounds = new List<long>();
        try
        {
            await writer.WriteHeaderAsync(new MigrationStream.Header(uuid, memory.Pages, memory.Seed), cancellationToken);
            // The first round: every page, at the version it has when its batch is read.
            for (var start = 0; start < memory.Pages; start += MigrationStream.PagesPerBatch)
            {
                var count = Math.Min(MigrationStream.PagesPerBatch, memory.Pages - start);
                var batch = new List<(int, uint)>(count);
                using (Enter())
                {
                    CatchUp();
                    WriteMemory(Migrating(uuid, domId));
                    for (var page = start; page < start + count; page++)
                    {
                        batch.Add((page, memory.Version(page)));
                    }
                }

                await writer.WritePagesAsync(memory.Seed, batch, cancellationToken);
                progress?.Invoke(0.9 * (start + count) / memory.Pages);
            }

            rounds.Add(memory.Pages);
            for (var round = 0; round < _options.MaxPrecopyRounds; round++)
            {
                List<(int Page, uint Version)> written;
                using (Enter())
                {
                    CatchUp();
                    WriteMemory(Migrating(uuid, domId));
                    if (memory.DirtyCount <= _options.StopAndCopyPages)
                    {
                        break;
                    }

                    written = memory.TakeDirty();
                }

                await writer.WritePagesAsync(memory.Seed, written, cancellationToken);
                rounds.Add(written.Count);
            }

            List<(int Page, uint Version)> last;
            SuspendImageBody state;
            byte[] digest;
            long pausedAt;
            using (Enter())
            {
                CatchUp();
                var domain = Migrating(uuid, domId);
                WriteMemory(domain);
                if (domain.Power == DomainPowerState.Running)
                {
                    domain.StopRunning(_simulatedNow);
                    domain.Power = DomainPowerState.Paused;
                    Emit(DomainEventKind.Paused, domain);
                }

                pausedAt = Stopwatch.GetTimestamp();
                last = memory.TakeDirty();
                memory.StopLogDirty();
                digest = memory.Digest();
                state = StateOf(domain);
                domain.Console($"{Stamp()} paused for the last round of a live migration ({last.Count} pages)", _options.ConsoleCapacity);
            }

            await writer.WritePagesAsync(memory.Seed, last, cancellationToken);
            rounds.Add(last.Count);
            await writer.WriteEndAsync(digest, state, cancellationToken);
            progress?.Invoke(1.0);
            return new MigrationReport(rounds, writer.BytesWritten, pausedAt);
        }
        catch
        {
            using (Enter())
            {
                if (_domains.TryGetValue(uuid, out var domain) && domain.DomId == domId)
                {
                    domain.Memory?.StopLogDirty();
                }
            }

            throw;
        }
    }

    public async ValueTask<DomainState> MigrateReceiveAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default)
    {
        var reader = new MigrationStream.Reader(source);
        var header = await reader.ReadHeaderAsync(cancellationToken);
        if (header.Uuid != uuid)
        {
            throw new MigrationStreamException($"the migration stream carries VM {header.Uuid}, not {uuid}");
        }

        int domId;
        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.Built || domain.Power != DomainPowerState.Paused)
            {
                throw new DomainStateException(uuid, "receive a migration into", "a created, unbuilt domain", domain.Power);
            }

            // Checked before the memory is allocated: a stream cannot make this host reserve more than the VM may have.
            if (header.Pages > GuestMemory.PagesOf(domain.Config.Memory.StaticMax))
            {
                throw new MigrationStreamException($"the stream carries {header.Pages} pages; VM {uuid} has at most {GuestMemory.PagesOf(domain.Config.Memory.StaticMax)}");
            }

            domId = domain.DomId;
        }

        var memory = new GuestMemory(header.Seed, header.Pages);
        var state = await reader.ReadMemoryAsync(memory, _options.MaxSuspendImageBytes, cancellationToken);
        if (state.Uuid != uuid || state.VcpusOnline < 1)
        {
            throw new MigrationStreamException($"the guest state in the stream is not VM {uuid}'s");
        }

        using (Enter())
        {
            CatchUp();
            var domain = Find(uuid);
            if (domain.DomId != domId || domain.Built)
            {
                throw new DomainStateException(uuid, "receive a migration into", "a created, unbuilt domain", domain.Power);
            }

            if (state.VcpusOnline > domain.Config.VcpusMax)
            {
                throw new MigrationStreamException($"the guest has {state.VcpusOnline} vCPUs online; the domain allows {domain.Config.VcpusMax}");
            }

            TakeState(domain, state, "resumed after a live migration");
            domain.Memory = memory;
            domain.MemoryWrittenUpTo = _simulatedNow;
            return Emit(DomainEventKind.Restored, domain);
        }
    }

    /// <summary>The guest's writes to its memory since they were last accounted, at its rate, while it ran.</summary>
    private void WriteMemory(SimDomain domain)
    {
        if (domain.Memory is not { } memory)
        {
            return;
        }

        if (domain.Power == DomainPowerState.Running && _simulatedNow > domain.MemoryWrittenUpTo)
        {
            var seconds = (_simulatedNow - domain.MemoryWrittenUpTo).TotalSeconds;
            memory.Write(seconds * _options.DirtyPagesPerSecond, GuestMemory.PagesOf(_options.DirtyWorkingSetBytes));
        }

        domain.MemoryWrittenUpTo = _simulatedNow;
    }

    private SimDomain Migrating(Guid uuid, int domId)
    {
        var domain = Find(uuid);
        return domain.DomId == domId && domain.Power is DomainPowerState.Running or DomainPowerState.Paused
            ? domain
            : throw new DomainStateException(uuid, "migrate", "the domain the migration began with, running or paused", domain.Power);
    }
}
