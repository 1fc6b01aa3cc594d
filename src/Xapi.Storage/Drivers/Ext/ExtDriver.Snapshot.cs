using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

public sealed partial class ExtDriver
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
    /// </summary>
    private async ValueTask<ChainChange> BranchAsync(SrContext sr, VdiInfo vdi, string newUuid, bool readOnly, CancellationToken cancellationToken)
    {
        var directory = DirectoryOf(sr);
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
        if (File.Exists(created))
        {
            throw new SmException(SmErrors.VdiExists, "The VDI already exists", newUuid);
        }
        WriteJournal(directory, new Journal(SnapshotJournal, vdi.Uuid, null, baseUuid, newUuid));
        MarkHidden(directory, baseUuid);
        Link(source.Path, directory.PathOf(baseUuid, QemuImg.Extension));
        directory.SyncDirectory();
        CrashPoints.Hit("snapshot.linked");
        await ReplaceWithOverlayAsync(directory, vdi.Uuid, baseUuid, cancellationToken).ConfigureAwait(false);
        CrashPoints.Hit("snapshot.source-replaced");
        await ReplaceWithOverlayAsync(directory, newUuid, baseUuid, cancellationToken).ConfigureAwait(false);
        RemoveJournal(directory, SnapshotJournal, vdi.Uuid);
        sr.Logger.LogInformation("SR {Sr}: {Kind} {Created} of {Source} over the new base {Base}", sr.Uuid, readOnly ? "snapshot" : "clone", newUuid, vdi.Uuid, baseUuid);

        chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);
        return new ChainChange(
            chain.Nodes[newUuid].Info with { ReadOnly = readOnly, Type = vdi.Type },
            chain.Nodes[vdi.Uuid].Info with { ReadOnly = vdi.ReadOnly, Type = vdi.Type },
            chain.Nodes[baseUuid].Info with { Type = vdi.Type });
    }

    /// <summary>Atomically makes <c>uuid.qcow2</c> an empty overlay on the base.</summary>
    private static async Task ReplaceWithOverlayAsync(SrDirectory directory, string uuid, string baseUuid, CancellationToken cancellationToken)
    {
        var path = directory.PathOf(uuid, QemuImg.Extension);
        var temporary = path + ".tmp";
        File.Delete(temporary);
        await QemuImg.CreateOverlayAsync(temporary, baseUuid + QemuImg.Extension, cancellationToken).ConfigureAwait(false);
        File.Move(temporary, path, overwrite: true);
        directory.SyncDirectory();
    }

    /// <summary>Finishes or undoes whatever journals a crash left, before the SR is used.</summary>
    private async Task RecoverAsync(SrContext sr, SrDirectory directory, CancellationToken cancellationToken)
    {
        foreach (var file in Directory.EnumerateFiles(directory.JournalDirectory, "*.json").Order(StringComparer.Ordinal).ToList())
        {
            var journal = JsonSerializer.Deserialize<Journal>(File.ReadAllText(file));
            if (journal is null || !SrDirectory.IsUuid(journal.Subject))
            {
                sr.Logger.LogWarning("SR {Sr}: removing unreadable journal {Journal}", sr.Uuid, file);
                File.Delete(file);
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
            }
        }
        foreach (var leftover in Directory.EnumerateFiles(directory.Root, "*.tmp"))
        {
            File.Delete(leftover);
        }
        // Markers of nodes that are gone.
        foreach (var marker in Directory.EnumerateFiles(directory.Root, "*" + HiddenMarker))
        {
            var uuid = Path.GetFileName(marker)[..^HiddenMarker.Length];
            if (SrDirectory.IsUuid(uuid) && !File.Exists(directory.PathOf(uuid, QemuImg.Extension)))
            {
                File.Delete(marker);
            }
        }
    }

    private static async Task RecoverSnapshotAsync(SrDirectory directory, Journal journal, CancellationToken cancellationToken)
    {
        var source = directory.PathOf(journal.Subject, QemuImg.Extension);
        var baseUuid = journal.Base!;
        var created = journal.Created!;
        var sourceReplaced = Qcow2Header.TryRead(source, out var header) && header.BackingFile == baseUuid + QemuImg.Extension;
        if (sourceReplaced)
        {
            if (!SrDirectory.IsRegularFile(directory.PathOf(created, QemuImg.Extension)))
            {
                await ReplaceWithOverlayAsync(directory, created, baseUuid, cancellationToken).ConfigureAwait(false);
            }
        }
        else
        {
            // The base is still a second name of the untouched source: dropping it loses nothing.
            File.Delete(directory.PathOf(created, QemuImg.Extension));
            File.Delete(directory.PathOf(baseUuid, QemuImg.Extension));
            File.Delete(directory.PathOf(baseUuid, HiddenMarker));
            directory.SyncDirectory();
        }
        RemoveJournal(directory, SnapshotJournal, journal.Subject);
    }

    private static string JournalPath(SrDirectory directory, string kind, string subject) =>
        Path.Combine(directory.JournalDirectory, $"{kind}-{directory.PathOf(subject, "")[(directory.Root.Length + 1)..]}.json");

    private static void WriteJournal(SrDirectory directory, Journal journal)
    {
        Directory.CreateDirectory(directory.JournalDirectory);
        SrDirectory.WriteDurably(JournalPath(directory, journal.Kind, journal.Subject), JsonSerializer.Serialize(journal));
    }

    private static void RemoveJournal(SrDirectory directory, string kind, string subject)
    {
        File.Delete(JournalPath(directory, kind, subject));
        SrDirectory.SyncDirectory(directory.JournalDirectory);
    }

    private static void Link(string existing, string newName)
    {
        if (LinkNative(existing, newName) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new SmException(SmErrors.VdiSnapshot, "Failed to snapshot VDI", $"link {existing} {newName}: errno {errno}");
        }
    }

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int LinkNative(string existing, string newName);
}
