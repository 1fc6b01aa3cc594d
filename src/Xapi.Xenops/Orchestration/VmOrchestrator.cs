namespace Xapi.Xenops.Orchestration;

/// <summary>The guest did not take up a shutdown, reboot or suspend request (it has no agent, or ignored it).</summary>
public sealed class ShutdownNotAcknowledgedException(Guid uuid) : XenopsException($"the guest of VM {uuid} did not acknowledge the shutdown request")
{
    public Guid Uuid { get; } = uuid;
}

/// <summary>The guest acknowledged a request but did not finish within the time allowed.</summary>
public sealed class ShutdownTimeoutException(Guid uuid, TimeSpan timeout) : XenopsException($"the guest of VM {uuid} did not shut down within {timeout}")
{
    public Guid Uuid { get; } = uuid;

    public TimeSpan Timeout { get; } = timeout;
}

/// <summary>
/// The ordering of VM operations over the atomic seam, shared by every backend (xenopsd's
/// VM_start, VM_shutdown, VM_reboot, VM_suspend and VM_resume micro-op lists): devices are plugged
/// in parallel within their group, a failed start leaves no domain behind, and a clean shutdown
/// waits for the guest's own event rather than polling.
/// </summary>
public sealed class VmOrchestrator(IHypervisor hypervisor, DomainWatcher watcher)
{
    public IHypervisor Hypervisor => hypervisor;

    /// <summary>Creates, builds and plugs the domain, then unpauses it unless <paramref name="paused"/>.</summary>
    /// <param name="progress">Fractions of the whole start, for the operation's task.</param>
    public async Task<DomainState> StartAsync(DomainConfig config, bool paused, Action<double>? progress, CancellationToken cancellationToken)
    {
        await hypervisor.CreateAsync(config, cancellationToken);
        progress?.Invoke(0.2);
        try
        {
            await hypervisor.BuildAsync(config.Uuid, cancellationToken);
            progress?.Invoke(0.4);
            return await PlugAndRunAsync(config, paused, progress, cancellationToken);
        }
        catch
        {
            await DestroyQuietlyAsync(config.Uuid);
            throw;
        }
    }

    /// <summary>
    /// Stops the domain. Clean asks the guest and waits up to <paramref name="timeout"/> for it to
    /// shut down; hard destroys it at once. Either way no domain is left.
    /// </summary>
    /// <exception cref="ShutdownNotAcknowledgedException"/>
    /// <exception cref="ShutdownTimeoutException"/>
    public async Task ShutdownAsync(Guid uuid, bool clean, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (clean)
        {
            await RequestAndWaitAsync(uuid, ShutdownRequest.Poweroff, timeout, cancellationToken);
        }

        await hypervisor.DestroyAsync(uuid, cancellationToken);
    }

    /// <summary>
    /// Reboots into a new domain of the same config: clean asks the guest first and waits for it, hard
    /// does not. Memory is not reserved again: what the old domain held is released and taken back.
    /// </summary>
    public async Task<DomainState> RebootAsync(DomainConfig config, bool clean, TimeSpan timeout, Action<double>? progress, CancellationToken cancellationToken)
    {
        if (clean)
        {
            await RequestAndWaitAsync(config.Uuid, ShutdownRequest.Reboot, timeout, cancellationToken);
        }

        await hypervisor.DestroyAsync(config.Uuid, cancellationToken);
        progress?.Invoke(0.3);
        return await StartAsync(config, paused: false, progress, cancellationToken);
    }

    /// <summary>Writes the suspend image to <paramref name="image"/> and destroys the domain.</summary>
    public async Task SuspendAsync(Guid uuid, Stream image, Action<double>? progress, CancellationToken cancellationToken)
    {
        await hypervisor.SaveAsync(uuid, image, cancellationToken);
        progress?.Invoke(0.8);
        await hypervisor.DestroyAsync(uuid, cancellationToken);
    }

    /// <summary>Creates a domain, restores the image into it, plugs its devices and runs it unless <paramref name="paused"/>.</summary>
    public async Task<DomainState> ResumeAsync(DomainConfig config, Stream image, bool paused, Action<double>? progress, CancellationToken cancellationToken)
    {
        await hypervisor.CreateAsync(config, cancellationToken);
        progress?.Invoke(0.2);
        try
        {
            await hypervisor.RestoreAsync(config.Uuid, image, cancellationToken);
            progress?.Invoke(0.5);
            return await PlugAndRunAsync(config, paused, progress, cancellationToken);
        }
        catch
        {
            await DestroyQuietlyAsync(config.Uuid);
            throw;
        }
    }

    /// <summary>
    /// The sending half of a live migration: the guest goes to <paramref name="destination"/> while it
    /// runs and ends paused here; the caller destroys the domain once the receiver runs the guest.
    /// </summary>
    public async Task<MigrationReport> MigrateSendAsync(Guid uuid, Stream destination, Action<double>? progress, CancellationToken cancellationToken) =>
        await hypervisor.MigrateSendAsync(uuid, destination, progress, cancellationToken);

    /// <summary>
    /// The receiving half: creates the domain, fills it from <paramref name="source"/> and plugs its
    /// devices; it stays paused until the sender hands the VM over. A failure leaves no domain.
    /// </summary>
    public async Task<DomainState> MigrateReceiveAsync(DomainConfig config, Stream source, CancellationToken cancellationToken)
    {
        await hypervisor.CreateAsync(config, cancellationToken);
        try
        {
            await hypervisor.MigrateReceiveAsync(config.Uuid, source, cancellationToken);
            return await PlugAndRunAsync(config, paused: true, progress: null, cancellationToken);
        }
        catch
        {
            await DestroyQuietlyAsync(config.Uuid);
            throw;
        }
    }

    private async Task<DomainState> PlugAndRunAsync(DomainConfig config, bool paused, Action<double>? progress, CancellationToken cancellationToken)
    {
        // As xenopsd: writable disks first, then read-only ones, each group in parallel; networks beside them.
        var disks = PlugGroupsAsync(config, cancellationToken);
        var networks = Task.WhenAll(config.Vifs.Select(vif => hypervisor.PlugVifAsync(config.Uuid, vif, cancellationToken).AsTask()));
        await Task.WhenAll(disks, networks);
        progress?.Invoke(0.8);
        var state = paused
            ? await hypervisor.TryGetDomainAsync(config.Uuid, cancellationToken) ?? throw new DomainNotFoundException(config.Uuid)
            : await hypervisor.UnpauseAsync(config.Uuid, cancellationToken);
        progress?.Invoke(1.0);
        return state;
    }

    private async Task PlugGroupsAsync(DomainConfig config, CancellationToken cancellationToken)
    {
        foreach (var mode in (VbdMode[])[VbdMode.ReadWrite, VbdMode.ReadOnly])
        {
            await Task.WhenAll(config.Vbds.Where(v => v.Mode == mode)
                .Select(vbd => hypervisor.PlugVbdAsync(config.Uuid, vbd, cancellationToken).AsTask()));
        }
    }

    private async Task RequestAndWaitAsync(Guid uuid, ShutdownRequest request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // Registered before the request, so a guest that answers at once is not missed.
        var stopped = watcher.WaitForAsync(uuid, e => e.Kind is DomainEventKind.Shutdown or DomainEventKind.Destroyed, waiting.Token);
        try
        {
            if (!await hypervisor.RequestShutdownAsync(uuid, request, cancellationToken))
            {
                throw new ShutdownNotAcknowledgedException(uuid);
            }

            try
            {
                await stopped.WaitAsync(timeout, cancellationToken);
            }
            catch (TimeoutException)
            {
                throw new ShutdownTimeoutException(uuid, timeout);
            }
        }
        finally
        {
            await waiting.CancelAsync();
        }
    }

    private async Task DestroyQuietlyAsync(Guid uuid)
    {
        try
        {
            await hypervisor.DestroyAsync(uuid, CancellationToken.None);
        }
        catch (DomainNotFoundException)
        {
            // Nothing was left to clean up.
        }
    }
}
