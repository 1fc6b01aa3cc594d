namespace Xapi.Xenops;

/// <summary>
/// The hypervisor seam: atomic operations on domains and their devices, shaped like xenopsd's
/// backend (VM_create, VM_build, VBD_plug, …). Each call does one thing or throws a
/// <see cref="XenopsException"/> and changes nothing; the ordering of a VM.start, a reboot or a
/// migration lives above, shared by every backend. Domains are named by their VM's uuid. The
/// seam writes no database rows: what changes is reported through <see cref="WatchAsync"/>, and
/// the daemon folds it into the database in one place.
/// </summary>
/// <remarks>
/// A VM.start over this seam: CreateAsync → BuildAsync → PlugVbdAsync/PlugVifAsync per device →
/// UnpauseAsync (or stay paused). A clean shutdown: RequestShutdownAsync(Poweroff), wait for the
/// Shutdown event (or give up and hard-shut-down), DestroyAsync. Suspend: RequestShutdownAsync
/// (Suspend) is optional; SaveAsync writes the image and leaves the domain shut down (Suspend),
/// then DestroyAsync. Resume: CreateAsync → RestoreAsync → plug devices → UnpauseAsync.
/// </remarks>
public interface IHypervisor
{
    /// <summary>Creates an empty paused domain and reserves its memory (squeezing others if needed).</summary>
    /// <exception cref="DomainAlreadyExistsException"/>
    /// <exception cref="NotEnoughMemoryException"/>
    /// <exception cref="InvalidDomainRequestException">A config that cannot run (unordered memory bounds, vCPUs).</exception>
    ValueTask<DomainState> CreateAsync(DomainConfig config, CancellationToken cancellationToken = default);

    /// <summary>Loads the guest's kernel or firmware; the domain stays paused.</summary>
    ValueTask<DomainState> BuildAsync(Guid uuid, CancellationToken cancellationToken = default);

    ValueTask<DomainState> PauseAsync(Guid uuid, CancellationToken cancellationToken = default);

    ValueTask<DomainState> UnpauseAsync(Guid uuid, CancellationToken cancellationToken = default);

    /// <summary>
    /// Asks the guest to shut down, reboot, suspend or halt itself. Returns whether the guest
    /// acknowledged the request (a guest without PV drivers cannot); the domain's Shutdown event
    /// follows when the guest has done it.
    /// </summary>
    ValueTask<bool> RequestShutdownAsync(Guid uuid, ShutdownRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Writes the domain's suspend image (memory and device state) to <paramref name="destination"/>
    /// and leaves the domain shut down with reason Suspend; destroy it next.
    /// </summary>
    ValueTask<DomainState> SaveAsync(Guid uuid, Stream destination, CancellationToken cancellationToken = default);

    /// <summary>Restores a suspend image into a created, unbuilt domain of the same VM; it stays paused.</summary>
    /// <exception cref="SuspendImageException"/>
    ValueTask<DomainState> RestoreAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default);

    /// <summary>
    /// Live migration, sending side: streams the domain's memory to <paramref name="destination"/>
    /// while the guest runs (pre-copy rounds, each sending again the pages the guest wrote during the
    /// one before), then pauses it and sends what is left with its device state. The domain is left
    /// paused here: destroy it once the destination runs the guest, or unpause it if the destination failed.
    /// </summary>
    /// <param name="progress">Fractions of the memory sent, for the operation's task.</param>
    /// <exception cref="MigrationNotSupportedException"/>
    ValueTask<MigrationReport> MigrateSendAsync(Guid uuid, Stream destination, Action<double>? progress, CancellationToken cancellationToken = default);

    /// <summary>Live migration, receiving side: fills a created, unbuilt domain of the same VM from the stream; it stays paused.</summary>
    /// <exception cref="MigrationStreamException"/>
    /// <exception cref="MigrationNotSupportedException"/>
    ValueTask<DomainState> MigrateReceiveAsync(Guid uuid, Stream source, CancellationToken cancellationToken = default);

    /// <summary>Destroys the domain in whatever state, unplugs its devices and frees its memory.</summary>
    ValueTask DestroyAsync(Guid uuid, CancellationToken cancellationToken = default);

    ValueTask<DomainState> PlugVbdAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken = default);

    /// <summary>Unplugs a VBD; <paramref name="force"/> does not wait for the guest to release it.</summary>
    ValueTask<DomainState> UnplugVbdAsync(Guid uuid, string device, bool force, CancellationToken cancellationToken = default);

    /// <summary>Empties a removable drive.</summary>
    ValueTask<DomainState> EjectVbdAsync(Guid uuid, string device, CancellationToken cancellationToken = default);

    /// <summary>Puts a disk into an empty removable drive.</summary>
    ValueTask<DomainState> InsertVbdAsync(Guid uuid, string device, DiskBinding disk, CancellationToken cancellationToken = default);

    ValueTask<DomainState> PlugVifAsync(Guid uuid, VifConfig vif, CancellationToken cancellationToken = default);

    ValueTask<DomainState> UnplugVifAsync(Guid uuid, int device, bool force, CancellationToken cancellationToken = default);

    /// <summary>Sets how many vCPUs are online (1..VcpusMax).</summary>
    ValueTask<DomainState> SetVcpusAsync(Guid uuid, int online, CancellationToken cancellationToken = default);

    /// <summary>Sets the balloon target (bytes, within the dynamic range); memory_actual follows.</summary>
    ValueTask<DomainState> SetMemoryTargetAsync(Guid uuid, long targetBytes, CancellationToken cancellationToken = default);

    /// <summary>Changes a running domain's dynamic range; the host's memory is shared again.</summary>
    ValueTask<DomainState> SetMemoryDynamicRangeAsync(Guid uuid, long dynamicMinBytes, long dynamicMaxBytes, CancellationToken cancellationToken = default);

    ValueTask<DomainStats> GetStatsAsync(Guid uuid, CancellationToken cancellationToken = default);

    /// <summary>The domain of a VM, or null if it has none here.</summary>
    ValueTask<DomainState?> TryGetDomainAsync(Guid uuid, CancellationToken cancellationToken = default);

    /// <summary>Every domain the backend has (what a restarted daemon reconciles against), by domid.</summary>
    ValueTask<IReadOnlyList<DomainState>> ListDomainsAsync(CancellationToken cancellationToken = default);

    ValueTask<HostMemoryInfo> GetHostMemoryAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// The <see cref="DomainEvent.Sequence"/> of the last event emitted so far: state read after this
    /// is at least as new as that event, so older events can be told apart and skipped.
    /// </summary>
    long LatestEventSequence { get; }

    /// <summary>
    /// The changes from the moment of the call on, in order, until cancelled. A subscriber that
    /// falls too far behind gets <see cref="EventStreamOverflowException"/> and must resynchronise.
    /// </summary>
    IAsyncEnumerable<DomainEvent> WatchAsync(CancellationToken cancellationToken = default);
}

/// <summary>
/// The disks a guest sees, supplied by the daemon (its storage data path) so that a backend never
/// references storage: the simulator's guest workload reads and writes real bytes through it.
/// </summary>
public interface IGuestDiskProvider
{
    /// <summary>Opens the disk behind a VBD for the guest of <paramref name="uuid"/>.</summary>
    ValueTask<IGuestDisk> OpenAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken);
}

/// <summary>A disk's bytes as a guest sees them; offsets and lengths in bytes, within <see cref="Size"/>.</summary>
public interface IGuestDisk : IAsyncDisposable
{
    long Size { get; }

    bool Writable { get; }

    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    ValueTask FlushAsync(CancellationToken cancellationToken);
}

/// <summary>What a sending host did in one live migration.</summary>
/// <param name="PagesPerRound">Pages sent in each round: the first is all of memory, the last is the stop-and-copy round (guest paused).</param>
/// <param name="BytesSent">Bytes of the whole stream.</param>
/// <param name="PausedAt">When the guest was paused for the last round, as <see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>.</param>
public sealed record MigrationReport(IReadOnlyList<long> PagesPerRound, long BytesSent, long PausedAt);
