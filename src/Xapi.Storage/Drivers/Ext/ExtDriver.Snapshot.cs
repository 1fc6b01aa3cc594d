using System.Text.Json;
using Microsoft.Extensions.Logging;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

public partial class ExtDriver
{
    // What a journal records: the operation, the VDI it is about, and the other nodes involved.
    private sealed record Journal(string Kind, string Subject, string? Parent, string? Base, string? Created);

    private const string SnapshotJournal = "snapshot";
    private const string CoalesceJournal = "coalesce";
    private const string LeafCoalesceJournal = "leaf";

    // Room a snapshot needs: two empty qcow2 images and the journal.
    private const long SnapshotOverhead = 1L << 20;

    public override ValueTask<ChainChange> SnapshotVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) =>
        BranchAsync(sr, vdi, newUuid, readOnly: true, cancellationToken);

    public override ValueTask<ChainChange> CloneVdiAsync(SrContext sr, VdiInfo vdi, string newUuid, CancellationToken cancellationToken) =>
        BranchAsync(sr, vdi, newUuid, readOnly: false, cancellationToken);

    /// <summary>
    /// The source's file becomes a hidden base (a hard link, so no data moves), then the source
    /// and the new VDI become empty overlays on it. A journal names the three nodes first; a crash
    /// before the source's overlay is in place undoes everything, after it finishes the rest.
    /// Where the filesystem has no hard links the source is renamed to the base instead; a crash
    /// while the source's name is missing renames it back.
    /// </summary>
    private async ValueTask<ChainChange> BranchAsync(SrContext sr, VdiInfo vdi, string newUuid, bool readOnly, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        if (!chain.Nodes.TryGetValue(vdi.Uuid, out var source) || source.Hidden)
        {
            throw new SmException(SmErrors.VdiMissing, "The VDI is not available", vdi.Uuid);
        }
        if (chain.Ancestry(vdi.Uuid).Count >= MaxChainDepth)
        {
            throw new SmException(SmErrors.SnapshotChainTooLong, "The snapshot chain is too long", $"{vdi.Uuid} is {MaxChainDepth} images deep; delete snapshots to let the chain coalesce");
        }
        var available = Available(directory);
        if (available < SnapshotOverhead)
        {
            throw new SrFullException(SnapshotOverhead, available);
        }
        var baseUuid = Guid.NewGuid().ToString("D");
        var created = directory.PathOf(newUuid, QemuImg.Extension);
        if (directory.Exists(created))
        {
            throw new SmException(SmErrors.VdiExists, "The VDI already exists", newUuid);
        }
        var journal = new Journal(SnapshotJournal, vdi.Uuid, null, baseUuid, newUuid);
        WriteJournal(directory, journal);
        try
        {
            MarkHidden(directory, baseUuid);
            if (!directory.TryLink(source.Path, directory.PathOf(baseUuid, QemuImg.Extension)))
            {
                directory.Move(source.Path, directory.PathOf(baseUuid, QemuImg.Extension));
            }
            directory.SyncDirectory();
            CrashPoints.Hit("snapshot.linked");
            await ReplaceWithOverlayAsync(directory, vdi.Uuid, baseUuid, cancellationToken).ConfigureAwait(false);
            CrashPoints.Hit("snapshot.source-replaced");
            await ReplaceWithOverlayAsync(directory, newUuid, baseUuid, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception failure)
        {
            UndoFailedSnapshot(sr, directory, journal, failure);
            throw;
        }
        RemoveJournal(directory, SnapshotJournal, vdi.Uuid);
        sr.Logger.LogInformation("SR {Sr}: {Kind} {Created} of {Source} over the new base {Base}", sr.Uuid, readOnly ? "snapshot" : "clone", newUuid, vdi.Uuid, baseUuid);

        chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        return new ChainChange(
            chain.Nodes[newUuid].Info with { ReadOnly = readOnly, Type = vdi.Type },
            chain.Nodes[vdi.Uuid].Info with { ReadOnly = vdi.ReadOnly, Type = vdi.Type },
            chain.Nodes[baseUuid].Info with { Type = vdi.Type });
    }

    /// <summary>Atomically makes <c>uuid.qcow2</c> an empty overlay on the base.</summary>
    private static async Task ReplaceWithOverlayAsync(ISrFileStore directory, string uuid, string baseUuid, CancellationToken cancellationToken)
    {
        var path = directory.PathOf(uuid, QemuImg.Extension);
        var temporary = path + ".tmp";
        directory.Delete(temporary);
        await QemuImg.CreateOverlayAsync(directory.ImageOf(temporary), directory.BackingNameOf(baseUuid, QemuImg.Extension), cancellationToken).ConfigureAwait(false);
        directory.Move(temporary, path);
        directory.SyncDirectory();
    }

    /// <summary>Finishes or undoes whatever journals a crash left, before the SR is used.</summary>
    private async Task RecoverAsync(SrContext sr, ISrFileStore directory, CancellationToken cancellationToken)
    {
        foreach (var file in directory.Files(directory.JournalDirectory, ".json"))
        {
            var journal = JsonSerializer.Deserialize<Journal>(directory.ReadText(file));
            if (journal is null || !SrDirectory.IsUuid(journal.Subject))
            {
                sr.Logger.LogWarning("SR {Sr}: removing unreadable journal {Journal}", sr.Uuid, file);
                directory.Delete(file);
                continue;
            }
            var shaped = journal.Kind == SnapshotJournal
                ? await SnapshotStillShapedAsync(directory, journal, cancellationToken).ConfigureAwait(false)
                : journal.Kind is not (CoalesceJournal or LeafCoalesceJournal or AbsorbJournal) || await StillShapedAsync(directory, journal, cancellationToken).ConfigureAwait(false);
            if (!shaped)
            {
                sr.Logger.LogWarning("SR {Sr}: dropping the {Kind} journal of {Vdi}: the chain changed since, and every state of the step is whole", sr.Uuid, journal.Kind, journal.Subject);
                RemoveJournal(directory, journal.Kind, journal.Subject);
                continue;
            }
            sr.Logger.LogWarning("SR {Sr}: recovering an interrupted {Kind} of {Vdi}", sr.Uuid, journal.Kind, journal.Subject);
            switch (journal.Kind)
            {
                case SnapshotJournal:
                    await RecoverSnapshotAsync(directory, journal, cancellationToken).ConfigureAwait(false);
                    break;
                case CoalesceJournal:
                    await CoalesceAsync(sr, directory, journal.Subject, journal.Parent!, cancellationToken).ConfigureAwait(false);
                    break;
                case LeafCoalesceJournal:
                    await LeafCoalesceAsync(sr, directory, journal.Subject, journal.Parent!, cancellationToken).ConfigureAwait(false);
                    break;
                case AbsorbJournal:
                    await AbsorbAsync(sr, directory, journal.Subject, journal.Parent!, journal.Base, cancellationToken).ConfigureAwait(false);
                    break;
            }
        }
        foreach (var leftover in directory.Files(directory.Root, ".tmp"))
        {
            directory.Delete(leftover);
        }
        // Markers of nodes that are gone.
        foreach (var marker in directory.Files(directory.Root, HiddenMarker))
        {
            var uuid = Path.GetFileName(marker)[..^HiddenMarker.Length];
            if (SrDirectory.IsUuid(uuid) && !directory.Exists(directory.PathOf(uuid, QemuImg.Extension)))
            {
                directory.Delete(marker);
            }
        }
    }

    /// <summary>
    /// Whether a coalesce or absorb journal still describes the chain: its node still reads
    /// through the parent it names (for a leaf or an absorb, as that parent's only child), or the
    /// step is past the point where the parent changes (renamed away, or rebased off and left with
    /// no child). A step that failed while the daemon ran leaves its journal, and the chain can
    /// change before the next attach (the leaf snapshotted, its file now a base): replaying then
    /// would commit into, rename over or delete images the journal never meant.
    /// </summary>
    private static async Task<bool> StillShapedAsync(ISrFileStore directory, Journal journal, CancellationToken cancellationToken)
    {
        if (journal.Parent is not { } parent || !SrDirectory.IsUuid(parent))
        {
            return false;
        }
        var coalesce = journal.Kind == CoalesceJournal;
        if (!coalesce && !directory.Exists(directory.PathOf(parent, QemuImg.Extension)))
        {
            return true;
        }
        var chain = await Chain.ReadAsync(directory, null, cancellationToken).ConfigureAwait(false);
        if (!chain.Nodes.TryGetValue(journal.Subject, out var node))
        {
            // A coalesced node already deleted: only the journal is left to remove.
            return coalesce;
        }
        if (journal.Kind == AbsorbJournal && node.Parent == journal.Base && chain.ChildrenOf(parent).Count == 0)
        {
            return true;
        }
        return node.Parent == parent && (coalesce || chain.ChildrenOf(parent).Count == 1);
    }

    /// <summary>
    /// A snapshot that failed while the daemon runs is undone at once, and its journal goes: left
    /// for the next attach, the journal would finish a VDI the caller was told failed, and until
    /// then a source renamed to its base would be missing, its only copy a hidden node with no
    /// child that the collector deletes. Once the source reads through the base it stays so (its
    /// data is whole and a guest may already write to the overlay); only the new VDI goes. If the
    /// undo fails too, the journal stays for the next attach.
    /// </summary>
    private static void UndoFailedSnapshot(SrContext sr, ISrFileStore directory, Journal journal, Exception failure)
    {
        try
        {
            var source = directory.PathOf(journal.Subject, QemuImg.Extension);
            directory.Delete(source + ".tmp");
            directory.Delete(directory.PathOf(journal.Created!, QemuImg.Extension) + ".tmp");
            RestoreOrFinishSnapshotAsync(directory, journal, finish: false, CancellationToken.None).GetAwaiter().GetResult();
            sr.Logger.LogWarning(failure, "SR {Sr}: the snapshot of {Vdi} failed and was undone", sr.Uuid, journal.Subject);
        }
        catch (Exception undo)
        {
            sr.Logger.LogError(undo, "SR {Sr}: the snapshot of {Vdi} failed ({Failure}) and could not be undone; the next attach recovers it from its journal", sr.Uuid, journal.Subject, failure.Message);
        }
    }

    /// <summary>
    /// Whether a snapshot journal still describes the chain: nothing but the source and the new
    /// VDI it names reads through its base. Undoing (renaming the base back over a missing source,
    /// or deleting the base) is only safe then; a base something else reads through is data.
    /// </summary>
    private static async Task<bool> SnapshotStillShapedAsync(ISrFileStore directory, Journal journal, CancellationToken cancellationToken)
    {
        if (journal.Base is not { } baseUuid || !SrDirectory.IsUuid(baseUuid) || journal.Created is not { } created || !SrDirectory.IsUuid(created))
        {
            return false;
        }
        var chain = await Chain.ReadAsync(directory, null, cancellationToken).ConfigureAwait(false);
        return chain.ChildrenOf(baseUuid).All(child => child == journal.Subject || child == created);
    }

    private static Task RecoverSnapshotAsync(ISrFileStore directory, Journal journal, CancellationToken cancellationToken) =>
        RestoreOrFinishSnapshotAsync(directory, journal, finish: true, cancellationToken);

    /// <param name="finish">After a crash, a source already on its base gets the new VDI made too (the
    /// caller never heard back, and a scan finds it); after a failure the caller saw, it does not.</param>
    private static async Task RestoreOrFinishSnapshotAsync(ISrFileStore directory, Journal journal, bool finish, CancellationToken cancellationToken)
    {
        var source = directory.PathOf(journal.Subject, QemuImg.Extension);
        var baseUuid = journal.Base!;
        var created = journal.Created!;
        if (!directory.Exists(source) && directory.IsRegularFile(directory.PathOf(baseUuid, QemuImg.Extension)))
        {
            // Renamed rather than linked, and stopped before the overlay: the base holds the source's only copy.
            directory.Move(directory.PathOf(baseUuid, QemuImg.Extension), source);
            directory.SyncDirectory();
        }
        var sourceReplaced = directory.TryReadHeader(source, out var header) && header.BackingFile == directory.BackingNameOf(baseUuid, QemuImg.Extension);
        if (sourceReplaced)
        {
            if (!finish)
            {
                directory.Delete(directory.PathOf(created, QemuImg.Extension));
                directory.SyncDirectory();
            }
            else if (!directory.IsRegularFile(directory.PathOf(created, QemuImg.Extension)))
            {
                await ReplaceWithOverlayAsync(directory, created, baseUuid, cancellationToken).ConfigureAwait(false);
            }
        }
        else
        {
            // The base is still a second name of the untouched source: dropping it loses nothing.
            directory.Delete(directory.PathOf(created, QemuImg.Extension));
            directory.Delete(directory.PathOf(baseUuid, QemuImg.Extension));
            directory.Delete(directory.PathOf(baseUuid, HiddenMarker));
            directory.SyncDirectory();
        }
        RemoveJournal(directory, SnapshotJournal, journal.Subject);
    }

    private static string JournalPath(ISrFileStore directory, string kind, string subject) =>
        directory.PathIn(directory.JournalDirectory, $"{kind}-{directory.PathOf(subject, "")[(directory.Root.Length + 1)..]}.json");

    private static void WriteJournal(ISrFileStore directory, Journal journal)
    {
        directory.CreateDirectory(directory.JournalDirectory);
        directory.WriteDurably(JournalPath(directory, journal.Kind, journal.Subject), JsonSerializer.Serialize(journal));
    }

    private static void RemoveJournal(ISrFileStore directory, string kind, string subject)
    {
        directory.Delete(JournalPath(directory, kind, subject));
        directory.SyncDirectory(directory.JournalDirectory);
    }
}
