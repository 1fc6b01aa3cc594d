using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Api;
using Xapi.Server.Hosting;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Pool;

/// <summary>
/// Moving a running guest between members (VM.pool_migrate). The sending host streams the guest to
/// the receiving host's <see cref="ReceivePath"/>, which builds a paused domain from it and answers
/// once it is ready. The sender then records the VM as the receiver's: that one database write is
/// where the VM changes hands. It destroys its own domain and tells the receiver to run the guest
/// (<see cref="CommitPath"/>). Before the write, any failure leaves the guest running where it was
/// and the receiver's domain destroyed (<see cref="AbortPath"/>, or the receiver's own patience:
/// <see cref="ServerOptions.MigrationReceiverPatience"/>);
/// after it, the guest is the receiver's even if a host dies in between. Each side keeps a note in
/// <c>DATA_DIR/migrations/</c> while a migration is in flight, and a restarted host settles its notes
/// against the database before it serves: a VM recorded as its own gets its guest running, any
/// other VM's domain is destroyed. Real xapi has no such notes and has left half-migrated VMs behind.
/// </summary>
public sealed partial class LiveMigration(VmRuntime runtime, XapiDatabase database, PoolMembership membership, Forwarder forwarder,
    ServerOptions options, Microsoft.Extensions.Hosting.IHostApplicationLifetime lifetime, ILogger<LiveMigration> logger) : IDisposable
{
    public const string ReceivePath = "/pool/migrate/receive";
    public const string CommitPath = "/pool/migrate/commit";
    public const string AbortPath = "/pool/migrate/abort";
    public const string VmParameter = "vm";
    public const string RunningParameter = "running";

    /// <summary>Where a test can have a host die mid-migration (<see cref="Xapi.Storage.CrashPoints"/>): the sender with the whole guest sent, not yet handed over.</summary>
    public const string CrashWhenSent = "migrate-sent";

    /// <summary>The sender with the VM handed over in the database, its own domain not yet destroyed.</summary>
    public const string CrashWhenHandedOver = "migrate-handed-over";

    /// <summary>The receiver with the guest ready and paused, before it says so.</summary>
    public const string CrashWhenReady = "migrate-ready";

    // How long a receiver waits for its copy of the database to reach the sender's point.
    private static readonly TimeSpan CatchUpPatience = TimeSpan.FromSeconds(10);
    private const string NotesDirectory = "migrations";
    private const string RunningNote = "running";
    private const string PausedNote = "paused";

    private readonly ConcurrentDictionary<Guid, Incoming> _incoming = new();
    private readonly CancellationTokenSource _stopping = new();

    public static bool Serves(HttpRequest request) =>
        HttpMethods.IsPost(request.Method) && (request.Path == ReceivePath || request.Path == CommitPath || request.Path == AbortPath);

    /// <summary>
    /// The sender's part: streams the guest of <paramref name="vm"/> to <paramref name="destination"/>,
    /// calls <paramref name="commit"/> (the database write that hands the VM over) once the guest is
    /// ready there, and returns when it runs there. The caller holds the VM.
    /// </summary>
    /// <exception cref="MigrationFailedException">Nothing was handed over: the guest runs here still.</exception>
    public async Task<MigrationOutcome> SendAsync(VMRef vm, Guid uuid, HostRecord destination, Action<double> progress, Action commit,
        CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var before = await runtime.Hypervisor.TryGetDomainAsync(uuid, cancellationToken) ?? throw new DomainNotFoundException(uuid);
        var running = before.PowerState == DomainPowerState.Running;
        WriteNote(uuid, running);
        MigrationReport? report = null;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, Address(destination, ReceivePath, uuid, running))
            {
                Content = new StreamedContent(async stream => report = await runtime.Orchestrator.MigrateSendAsync(uuid, stream, progress, cancellationToken)),
            };
            request.Headers.TransferEncodingChunked = true;
            using var response = await forwarder.PoolHttp.SendAsync(request, cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                throw new MigrationFailedException(await ReasonAsync(response, cancellationToken));
            }
            if (report is null)
            {
                throw new MigrationFailedException("the destination answered before the whole guest was sent");
            }
            Xapi.Storage.CrashPoints.Hit(CrashWhenSent);
        }
        catch (Exception e) when (e is XenopsException or HttpRequestException or IOException or OperationCanceledException or MigrationFailedException)
        {
            await RollBackAsync(uuid, running, destination);
            throw e as MigrationFailedException ?? new MigrationFailedException(e.Message, e);
        }

        commit();
        Xapi.Storage.CrashPoints.Hit(CrashWhenHandedOver);
        // The guest is the destination's now: this host's domain goes, and its events are not the VM's any more.
        await runtime.Hypervisor.DestroyAsync(uuid, CancellationToken.None);
        runtime.ForgetEvents(uuid);
        DeleteNote(uuid);
        var ranAfter = TimeSpan.Zero;
        try
        {
            using var response = await forwarder.PoolHttp.PostAsync(Address(destination, CommitPath, uuid, running), content: null, CancellationToken.None);
            response.EnsureSuccessStatusCode();
            ranAfter = TimeSpan.FromMilliseconds(JsonSerializer.Deserialize<CommitReply>(await response.Content.ReadAsStringAsync(CancellationToken.None))?.AfterUnpauseMs ?? 0);
        }
        catch (Exception e) when (e is HttpRequestException or JsonException or IOException)
        {
            // Handed over already: the destination's note runs the guest when it is back.
            LogCommitUnsent(uuid, destination.Address, e.Message);
        }
        var downtime = Stopwatch.GetElapsedTime(report.PausedAt) - ranAfter;
        var outcome = new MigrationOutcome(report.PagesPerRound, report.BytesSent, downtime, clock.Elapsed);
        LogMigrated(uuid, destination.Address, outcome.PagesPerRound.Count, outcome.BytesSent, outcome.Downtime.TotalMilliseconds, outcome.Duration.TotalMilliseconds);
        Completed?.Invoke(uuid, outcome);
        return outcome;
    }

    /// <summary>Raised on the sending host after each migration it completed (benchmarks and tests read the figures).</summary>
    public event Action<Guid, MigrationOutcome>? Completed;

    /// <summary>The receiver's part: the three paths of <see cref="Serves"/>, with the pool secret only.</summary>
    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        if (!membership.Secret.Matches(request.Cookies[PoolSecret.CookieName]))
        {
            await AnswerAsync(context, StatusCodes.Status403Forbidden, "the pool secret is missing or wrong");
            return;
        }
        if (!Guid.TryParse(request.Query[VmParameter], out var uuid))
        {
            await AnswerAsync(context, StatusCodes.Status400BadRequest, $"'{VmParameter}' must be a VM uuid");
            return;
        }
        await membership.CatchUpToAsync(request.Headers[Forwarder.PoolPositionHeader].ToString(), CatchUpPatience, context.RequestAborted);
        if (!database.Snapshot.TryGetByUuid(VMRef.Class, uuid.ToString("D"), out var row))
        {
            await AnswerAsync(context, StatusCodes.Status404NotFound, $"no VM {uuid}");
            return;
        }
        var vm = new VMRef(row.Ref);
        if (request.Path == ReceivePath)
        {
            await ReceiveAsync(context, vm, uuid, request.Query[RunningParameter] != "0");
        }
        else if (_incoming.TryRemove(uuid, out var incoming))
        {
            if (request.Path == CommitPath)
            {
                var afterUnpause = await RunAsync(incoming);
                await AnswerAsync(context, StatusCodes.Status200OK, JsonSerializer.Serialize(new CommitReply(afterUnpause.TotalMilliseconds)));
            }
            else
            {
                await DiscardAsync(incoming);
                await AnswerAsync(context, StatusCodes.Status200OK, "aborted");
            }
        }
        else
        {
            await AnswerAsync(context, StatusCodes.Status404NotFound, $"no migration of VM {uuid} is waiting here");
        }
    }

    /// <summary>
    /// Settles the migrations a stopped daemon left in flight, before the runtime reconciles: a VM
    /// the database gives this host keeps (or gets back) a running guest, and any other VM's domain
    /// here is destroyed.
    /// </summary>
    public async Task RecoverAsync(CancellationToken cancellationToken)
    {
        var directory = Path.Combine(options.DataDir, NotesDirectory);
        if (!Directory.Exists(directory))
        {
            return;
        }
        foreach (var note in Directory.GetFiles(directory))
        {
            if (!Guid.TryParse(Path.GetFileName(note), out var uuid))
            {
                continue;
            }
            var running = File.ReadAllText(note).Trim() == RunningNote;
            var snapshot = database.Snapshot;
            var ours = snapshot.TryGetByUuid(VMRef.Class, uuid.ToString("D"), out var row)
                && snapshot.TryGet(new VMRef(row.Ref), out var record) && record.ResidentOn == runtime.ThisHost;
            var domain = await runtime.Hypervisor.TryGetDomainAsync(uuid, cancellationToken);
            if (domain is not null && !ours)
            {
                await runtime.Hypervisor.DestroyAsync(uuid, cancellationToken);
            }
            else if (domain is { PowerState: DomainPowerState.Paused, Built: true } && running)
            {
                await runtime.Hypervisor.UnpauseAsync(uuid, cancellationToken);
            }
            LogRecovered(uuid, ours, domain is not null);
            File.Delete(note);
        }
    }

    public void Dispose()
    {
        _stopping.Cancel();
        _stopping.Dispose();
    }

    private async Task ReceiveAsync(HttpContext context, VMRef vm, Guid uuid, bool running)
    {
        var snapshot = database.Snapshot;
        var config = DomainConfigs.Of(snapshot, snapshot.Get(vm));
        // Not tied to this request: the hold lasts until the sender commits or aborts.
        var hold = await runtime.HoldAsync(uuid, CancellationToken.None);
        WriteNote(uuid, running);
        try
        {
            // A host that is stopping takes no guest in: the sender keeps it.
            using var receiving = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping);
            await runtime.Orchestrator.MigrateReceiveAsync(config, context.Request.Body, receiving.Token);
        }
        catch (Exception e) when (e is XenopsException or IOException or OperationCanceledException or BadHttpRequestException)
        {
            runtime.ForgetEvents(uuid);
            DeleteNote(uuid);
            await hold.DisposeAsync();
            LogReceiveFailed(uuid, e.Message);
            if (!context.RequestAborted.IsCancellationRequested)
            {
                context.Response.Headers.Connection = "close";
                await AnswerAsync(context, StatusCodes.Status500InternalServerError, e.Message);
            }
            return;
        }
        Xapi.Storage.CrashPoints.Hit(CrashWhenReady);
        var incoming = new Incoming(vm, uuid, running, hold);
        _incoming[uuid] = incoming;
        _ = DecideIfForgottenAsync(incoming);
        await AnswerAsync(context, StatusCodes.Status200OK, "ready");
    }

    /// <summary>Runs the guest that was handed over; how long that took after the guest was unpaused.</summary>
    private async Task<TimeSpan> RunAsync(Incoming incoming)
    {
        long unpaused;
        await using (incoming.Hold)
        {
            if (incoming.Running)
            {
                await runtime.Hypervisor.UnpauseAsync(incoming.Uuid, CancellationToken.None);
            }
            unpaused = Stopwatch.GetTimestamp();
            await runtime.SyncAsync(incoming.Vm, incoming.Uuid, VmPowerState.Halted, CancellationToken.None);
            DeleteNote(incoming.Uuid);
        }
        return Stopwatch.GetElapsedTime(unpaused);
    }

    private async Task DiscardAsync(Incoming incoming)
    {
        await using (incoming.Hold)
        {
            try
            {
                await runtime.Hypervisor.DestroyAsync(incoming.Uuid, CancellationToken.None);
            }
            catch (DomainNotFoundException)
            {
                // Gone already.
            }
            runtime.ForgetEvents(incoming.Uuid);
            DeleteNote(incoming.Uuid);
        }
    }

    /// <summary>A sender that went quiet after "ready": whatever the database says decides.</summary>
    private async Task DecideIfForgottenAsync(Incoming incoming)
    {
        try
        {
            await Task.Delay(options.MigrationReceiverPatience, _stopping.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (!_incoming.TryRemove(new KeyValuePair<Guid, Incoming>(incoming.Uuid, incoming)))
        {
            return;
        }
        var ours = database.Snapshot.TryGet(incoming.Vm, out var record) && record.ResidentOn == runtime.ThisHost;
        if (ours)
        {
            await RunAsync(incoming);
        }
        else
        {
            await DiscardAsync(incoming);
        }
        LogSenderSilent(incoming.Uuid, ours);
    }

    private async Task RollBackAsync(Guid uuid, bool running, HostRecord destination)
    {
        try
        {
            if (running && await runtime.Hypervisor.TryGetDomainAsync(uuid, CancellationToken.None) is { PowerState: DomainPowerState.Paused })
            {
                await runtime.Hypervisor.UnpauseAsync(uuid, CancellationToken.None);
            }
        }
        finally
        {
            DeleteNote(uuid);
        }
        try
        {
            using var response = await forwarder.PoolHttp.PostAsync(Address(destination, AbortPath, uuid, running), content: null, CancellationToken.None);
        }
        catch (HttpRequestException)
        {
            // The destination settles its half by itself: its patience, or its notes when it is back.
        }
    }

    private Uri Address(HostRecord host, string path, Guid uuid, bool running) =>
        new(membership.MasterUri(host.Address), string.Create(CultureInfo.InvariantCulture,
            $"{path}?{VmParameter}={uuid:D}&{RunningParameter}={(running ? 1 : 0)}"));

    private void WriteNote(Guid uuid, bool running)
    {
        var directory = Directory.CreateDirectory(Path.Combine(options.DataDir, NotesDirectory));
        var path = Path.Combine(directory.FullName, uuid.ToString("D"));
        // Durable before the first byte moves: a host that dies mid-way must find it.
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 4096, FileOptions.WriteThrough);
        file.Write(System.Text.Encoding.ASCII.GetBytes(running ? RunningNote : PausedNote));
        file.Flush(flushToDisk: true);
    }

    private void DeleteNote(Guid uuid) => File.Delete(Path.Combine(options.DataDir, NotesDirectory, uuid.ToString("D")));

    private static async Task<string> ReasonAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var text = (await response.Content.ReadAsStringAsync(cancellationToken)).Trim();
        return response.StatusCode == HttpStatusCode.Forbidden ? "the destination refused the pool secret" : text.Length > 0 ? text : response.ReasonPhrase ?? "";
    }

    private static Task AnswerAsync(HttpContext context, int status, string text)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain";
        return context.Response.WriteAsync(text + "\n");
    }

    private sealed record Incoming(VMRef Vm, Guid Uuid, bool Running, VmRuntime.Hold Hold);

    private sealed record CommitReply(double AfterUnpauseMs);

    /// <summary>A request body written as it is produced (chunked), so a guest's memory is never held whole.</summary>
    private sealed class StreamedContent(Func<Stream, Task> write) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => write(stream);

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Migrated VM {Uuid} to {Destination} in {Rounds} rounds, {Bytes} bytes; downtime {DowntimeMs:F1} ms, duration {DurationMs:F1} ms")]
    private partial void LogMigrated(Guid uuid, string destination, int rounds, long bytes, double downtimeMs, double durationMs);

    [LoggerMessage(Level = LogLevel.Error, Message = "VM {Uuid} was handed over to {Destination}, but it could not be told to run the guest ({Reason}); it will when its note is settled")]
    private partial void LogCommitUnsent(Guid uuid, string destination, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Receiving VM {Uuid} failed: {Reason}")]
    private partial void LogReceiveFailed(Guid uuid, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The sender of VM {Uuid} went silent after the guest was ready here; settled by the database, which gives it to this host: {Ours}")]
    private partial void LogSenderSilent(Guid uuid, bool ours);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Settled an interrupted migration of VM {Uuid}: resident here {Ours}, domain found {HadDomain}")]
    private partial void LogRecovered(Guid uuid, bool ours, bool hadDomain);
}

/// <summary>What one live migration did, as the sending host measured it.</summary>
/// <param name="Downtime">From the guest's pause on the sender to its unpause on the receiver.</param>
public sealed record MigrationOutcome(IReadOnlyList<long> PagesPerRound, long BytesSent, TimeSpan Downtime, TimeSpan Duration);

/// <summary>A migration that did not hand the VM over; its guest runs where it was.</summary>
public sealed class MigrationFailedException(string message, Exception? inner = null) : Exception(message, inner);
