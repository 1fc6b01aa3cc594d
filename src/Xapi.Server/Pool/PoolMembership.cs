using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Database.Replication;
using Xapi.Model;
using Xapi.Server.Hosting;

namespace Xapi.Server.Pool;

/// <summary>
/// This host's place in its pool. A master serves the pool's database; a member keeps a copy that
/// follows the master's (one request at a time held open at the master until something changes)
/// and writes through the master. A member restarted takes the master's whole database again
/// before it writes anything.
/// </summary>
public sealed class PoolMembership : IAsyncDisposable
{
    /// <summary>How long the master holds a member's request for changes when nothing changes.</summary>
    public static readonly TimeSpan ChangesWait = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan RequestTimeout = ChangesWait + TimeSpan.FromSeconds(30);
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan LongestRetryDelay = TimeSpan.FromSeconds(5);

    private readonly XapiDatabase _database;
    private readonly ServerOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private HttpMasterLink? _link;
    private Task _following = Task.CompletedTask;
    private CancellationTokenSource _followingStop;

    public PoolMembership(XapiDatabase database, PoolSecret secret, FirstBoot firstBoot, ServerOptions options, ILogger<PoolMembership> logger)
    {
        ThisHost = firstBoot.HostRef;
        _followingStop = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        _database = database;
        Secret = secret;
        _options = options;
        _logger = logger;
        Role = PoolRole.Read(options.DataDir);
    }

    public PoolSecret Secret { get; }

    /// <summary>With the PostgreSQL backend: how this member takes the pool over when its master is gone.</summary>
    public PostgresSuccession? Succession { get; set; }

    public PoolRole Role { get; private set; }

    public bool IsMember => !Role.IsMaster;

    /// <summary>The master's address as members give it to clients (<c>HOST_IS_SLAVE</c>); null on the master.</summary>
    public string? MasterAddress => Role.MasterAddress;

    public Uri MasterUri(string masterAddress) => HttpMasterLink.MasterUri(masterAddress, _options.HttpPort);

    public HttpMasterLink LinkTo(string masterAddress, string secret) => new(MasterUri(masterAddress), secret, RequestTimeout) { MemberHost = ThisHost };

    /// <summary>This host, as its requests to the master name it (the master's heartbeat of it).</summary>
    public string ThisHost { get; }

    /// <summary>
    /// A member at start-up: the master's whole database replaces the copy before anything is
    /// written. Tried for <paramref name="patience"/>; a master that does not answer stops the start.
    /// </summary>
    public void ResumeMembership(TimeSpan patience)
    {
        if (Role.MasterAddress is not { } master)
        {
            return;
        }
        var link = LinkTo(master, Secret.Value);
        var deadline = DateTime.UtcNow + patience;
        var delay = FirstRetryDelay;
        while (true)
        {
            try
            {
                var whole = link.ChangesAsync("", 0, TimeSpan.Zero, _stopping.Token).GetAwaiter().GetResult();
                _database.FollowMaster(link, whole);
                break;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or FormatException)
            {
                if (DateTime.UtcNow + delay > deadline)
                {
                    link.Dispose();
                    throw new StartupException($"this host is a member of the pool whose master is {master} ({PoolRole.FileName}), and the master did not answer ({e.Message}).", e);
                }
                _logger.LogWarning("The pool master {Master} did not answer ({Reason}); trying again", master, e.Message);
                Thread.Sleep(delay);
                delay = Min(delay * 2, LongestRetryDelay);
            }
        }
        _logger.LogInformation("Following the pool master {Master}: its database has {Generation} generations", master, _database.MasterPosition.Generation);
        Follow(link);
    }

    /// <summary>
    /// Ends a join on the joining host, once the master took its rows: the pool's secret and the
    /// master's address on disk, then the master's whole database as this host's copy.
    /// </summary>
    public void BecomeMember(string masterAddress, string secret, HttpMasterLink link, ReplicaDelta whole)
    {
        Secret.Replace(secret);
        var role = new PoolRole(masterAddress);
        role.Write(_options.DataDir);
        Role = role;
        _database.FollowMaster(link, whole);
        _logger.LogInformation("Joined the pool of {Master}", masterAddress);
        Follow(link);
    }

    /// <summary>
    /// Leaves the pool (this host was ejected): writes are its own again, the role file says
    /// master, a new secret is made, and <paramref name="startAfresh"/> replaces the pool's
    /// database with a fresh one-host pool.
    /// </summary>
    public async Task LeavePoolAsync(Func<Task> startAfresh)
    {
        await StopFollowingAsync().ConfigureAwait(false);
        _database.StopFollowingMaster();
        PoolRole.Master.Write(_options.DataDir);
        Role = PoolRole.Master;
        Secret.Replace(string.Join('/', Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid()));
        await startAfresh().ConfigureAwait(false);
        _logger.LogWarning("Ejected from the pool: this host is the master of a new pool of its own");
    }

    /// <summary>
    /// This member becomes the master with the copy it holds (<c>pool.emergency_transition_to_master</c>):
    /// its writes are its own from now on.
    /// </summary>
    public async Task BecomeMasterAsync()
    {
        await StopFollowingAsync().ConfigureAwait(false);
        _database.StopFollowingMaster();
        PoolRole.Master.Write(_options.DataDir);
        Role = PoolRole.Master;
        _logger.LogWarning("This host is now its pool's master, with the pool database as its copy held it");
    }

    /// <summary>
    /// This host follows another master (<c>pool.emergency_reset_master</c>): that master's
    /// whole database replaces what this host held, master or member.
    /// </summary>
    public async Task FollowNewMasterAsync(string masterAddress)
    {
        await StopFollowingAsync().ConfigureAwait(false);
        var role = new PoolRole(masterAddress);
        role.Write(_options.DataDir);
        Role = role;
        await Task.Run(() => ResumeMembership(_options.PoolMasterPatience)).ConfigureAwait(false);
    }

    /// <summary>
    /// The same for a request from another host carrying its position as the
    /// <see cref="Operations.Forwarder.PoolPositionHeader"/> header (<c>epoch/generation</c>); nothing without one.
    /// </summary>
    public Task CatchUpToAsync(string? position, TimeSpan patience, CancellationToken cancellationToken) =>
        position is not null && position.LastIndexOf('/') is > 0 and var slash
            && long.TryParse(position.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var generation)
            ? CatchUpAsync(position[..slash], generation, patience, cancellationToken)
            : Task.CompletedTask;

    /// <summary>
    /// Brings this member's copy up to the master's point <paramref name="epoch"/>/<paramref name="generation"/>
    /// (what a forwarded call was sent at), taking the changes itself rather than waiting for the
    /// follower; gives up after <paramref name="patience"/> and lets the call run on what it has.
    /// </summary>
    public async Task CatchUpAsync(string epoch, long generation, TimeSpan patience, CancellationToken cancellationToken)
    {
        if (_link is not { } link)
        {
            return;
        }
        var deadline = DateTime.UtcNow + patience;
        while (DateTime.UtcNow < deadline)
        {
            var (heldEpoch, held) = _database.MasterPosition;
            if (heldEpoch == epoch && held >= generation)
            {
                // Taken is not yet readable: the copy's own journal makes it so.
                await _database.WhenVisibleAsync(_database.CommittedGeneration, cancellationToken).ConfigureAwait(false);
                return;
            }
            try
            {
                _database.ApplyFromMaster(await link.ChangesAsync(heldEpoch, held, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false));
            }
            catch (Exception e) when (e is HttpRequestException or FormatException or ObjectDisposedException)
            {
                _logger.LogWarning("Could not catch up with the pool master before a forwarded call: {Reason}", e.Message);
                return;
            }
        }
    }

    private async Task StopFollowingAsync(bool keepLink = false)
    {
        var following = _following;
        _followingStop.Cancel();
        try
        {
            await following.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        if (!keepLink)
        {
            _link?.Dispose();
            _link = null;
        }
        _followingStop = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
    }

    /// <summary>
    /// The master hands the pool over to the member at <paramref name="newMasterAddress"/>
    /// (<c>pool.designate_new_master</c>): <paramref name="makeNewMaster"/> asks it to take over
    /// while nothing commits here, and this host then follows it.
    /// </summary>
    public async Task HandOverAsync(string newMasterAddress, Func<Task> makeNewMaster)
    {
        var link = LinkTo(newMasterAddress, Secret.Value);
        try
        {
            while (true)
            {
                await _database.WhenVisibleAsync(_database.CommittedGeneration).ConfigureAwait(false);
                if (await Task.Run(() => _database.HandOverTo(link, () => makeNewMaster().GetAwaiter().GetResult())).ConfigureAwait(false))
                {
                    break;
                }
            }
        }
        catch
        {
            link.Dispose();
            throw;
        }
        var role = new PoolRole(newMasterAddress);
        role.Write(_options.DataDir);
        Role = role;
        _logger.LogWarning("Handed the pool over to the master at {Master}; following it", newMasterAddress);
        Follow(link);
    }

    /// <summary>
    /// This member takes the pool over from its master (<c>pool.designate_new_master</c>, asked by
    /// the master, which commits nothing meanwhile): it takes the master's last changes, then its
    /// writes are its own.
    /// </summary>
    public async Task TakeOverAsync()
    {
        var link = _link ?? throw new InvalidOperationException("this host follows no master");
        await StopFollowingAsync(keepLink: true).ConfigureAwait(false);
        var (epoch, since) = _database.MasterPosition;
        _database.ApplyFromMaster(await link.ChangesAsync(epoch, since, TimeSpan.Zero, _stopping.Token).ConfigureAwait(false));
        _database.StopFollowingMaster();
        link.Dispose();
        _link = null;
        PoolRole.Master.Write(_options.DataDir);
        Role = PoolRole.Master;
        _logger.LogWarning("This host took the pool over: it is the master");
    }

    private void Follow(HttpMasterLink link)
    {
        _link = link;
        var stop = _followingStop.Token;
        _following = Task.Run(() => FollowAsync(link, stop));
    }

    private async Task FollowAsync(HttpMasterLink link, CancellationToken stopping)
    {
        var delay = FirstRetryDelay;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var (epoch, since) = _database.MasterPosition;
                _database.ApplyFromMaster(await link.ChangesAsync(epoch, since, ChangesWait, stopping).ConfigureAwait(false));
                delay = FirstRetryDelay;
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or FormatException)
            {
                _logger.LogWarning("Could not follow the pool master {Master} ({Reason}); trying again in {Delay}", link.Master, e.Message, delay);
                // Only a master that cannot be connected to is gone: one that answers, however badly, still holds the pool.
                if (Succession is { } succession && e is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError }
                    && await SucceedAsync(succession, stopping).ConfigureAwait(false))
                {
                    return;
                }
                try
                {
                    await Task.Delay(delay, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                delay = Min(delay * 2, LongestRetryDelay);
            }
        }
    }

    /// <summary>True when this host stops following its master: it took the pool over, or follows the new master the store names.</summary>
    private async Task<bool> SucceedAsync(PostgresSuccession succession, CancellationToken stopping)
    {
        string? master;
        try
        {
            master = await succession.ResolveAsync(stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // This host is stopping (or following another master): nothing to take over.
            return true;
        }
        catch (Exception e) when (e is Npgsql.NpgsqlException or TimeoutException or InvalidOperationException)
        {
            _logger.LogWarning("Could not reach the pool database to take the pool over ({Reason})", e.Message);
            return false;
        }
        if (master is null)
        {
            _link?.Dispose();
            _link = null;
            PoolRole.Master.Write(_options.DataDir);
            Role = PoolRole.Master;
            // Clients told HOST_IS_SLAVE by the other members are sent here from now on.
            _database.Write(tx =>
            {
                foreach (var pool in tx.All<PoolRecord>().ToList())
                {
                    tx.Update(pool.Ref, p => p.Master = new HostRef(ThisHost));
                }
            });
            _logger.LogWarning("The pool master is gone: this host took the pool over from the pool database and is the master");
            return true;
        }
        if (master != Role.MasterAddress)
        {
            _ = Task.Run(() => FollowNewMasterAsync(master));
            return true;
        }
        return false;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        // The host stops it before its web server stops; the service container disposes it again.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _following.ConfigureAwait(false);
        _link?.Dispose();
        _stopping.Dispose();
    }
}
