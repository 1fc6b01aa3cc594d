using Microsoft.Extensions.Logging;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

public partial class ExtDriver
{
    /// <summary>
    /// SM's collector on qcow2 chains: first unused hidden nodes go; then a hidden node that is
    /// its hidden parent's only child is merged into that parent; then a leaf that is its hidden
    /// parent's only child is merged with it. Data only ever moves into a hidden node that nobody
    /// reads except through the node being merged, so no VDI's content changes at any moment.
    /// </summary>
    public override async ValueTask<GcStep> CollectGarbageAsync(SrContext sr, Func<string, bool> inUse, CancellationToken cancellationToken)
    {
        using var directory = StoreOf(sr);
        directory.CheckRoot();
        var chain = await Chain.ReadAsync(directory, sr.Logger, cancellationToken).ConfigureAwait(false);

        var garbage = chain.Nodes.Values
            .Where(n => directory.Exists(directory.PathOf(n.Uuid, HiddenMarker)) && chain.ChildrenOf(n.Uuid).Count == 0)
            .Select(n => n.Uuid).ToList();
        if (garbage.Count > 0)
        {
            foreach (var uuid in garbage)
            {
                directory.Delete(directory.PathOf(uuid, QemuImg.Extension));
                directory.Delete(directory.PathOf(uuid, HiddenMarker));
            }
            directory.SyncDirectory();
            sr.Logger.LogInformation("SR {Sr}: removed unused chain nodes {Nodes}", sr.Uuid, garbage);
            return new GcStep(GcStepKind.RemovedGarbage, garbage);
        }

        bool OnlyChildOfHiddenParent(Node node) =>
            node.Parent is { } parent && chain.Nodes[parent].Hidden && chain.ChildrenOf(parent).Count == 1;

        if (!directory.CanCommitIntoBacking)
        {
            return await AbsorbStepAsync(sr, directory, chain, inUse, cancellationToken).ConfigureAwait(false);
        }

        var deferred = false;
        foreach (var node in chain.Nodes.Values.Where(n => n.Hidden && OnlyChildOfHiddenParent(n)).OrderBy(n => n.Uuid, StringComparer.Ordinal))
        {
            if (!HasRoomToMerge(directory, node))
            {
                deferred = true;
                continue;
            }
            await CoalesceAsync(sr, directory, node.Uuid, node.Parent!, cancellationToken).ConfigureAwait(false);
            return new GcStep(GcStepKind.Coalesced, [node.Uuid]);
        }
        foreach (var node in chain.Nodes.Values.Where(n => !n.Hidden && OnlyChildOfHiddenParent(n)).OrderBy(n => n.Uuid, StringComparer.Ordinal))
        {
            if (inUse(node.Uuid) || !HasRoomToMerge(directory, node))
            {
                deferred = true;
                continue;
            }
            await LeafCoalesceAsync(sr, directory, node.Uuid, node.Parent!, cancellationToken).ConfigureAwait(false);
            return new GcStep(GcStepKind.LeafCoalesced, [node.Parent!]);
        }
        return deferred ? new GcStep(GcStepKind.Deferred, []) : GcStep.Idle;
    }

    // Merging can at most add the node's own clusters to its parent.
    private static bool HasRoomToMerge(ISrFileStore directory, Node node) => Available(directory) >= node.Info.PhysicalUtilisation;

    /// <summary>Merges hidden <paramref name="node"/> into its parent, points its children at the parent, removes it. Every step may be run again.</summary>
    private async Task CoalesceAsync(SrContext sr, ISrFileStore directory, string node, string parent, CancellationToken cancellationToken)
    {
        var nodePath = directory.PathOf(node, QemuImg.Extension);
        if (!directory.Exists(nodePath))
        {
            RemoveJournal(directory, CoalesceJournal, node);
            return;
        }
        WriteJournal(directory, new Journal(CoalesceJournal, node, parent, null, null));
        sr.Logger.LogInformation("SR {Sr}: coalescing {Node} into {Parent}", sr.Uuid, node, parent);
        await GrowToAsync(directory, parent, node, cancellationToken).ConfigureAwait(false);
        CrashPoints.Hit("coalesce.journalled");
        await QemuImg.CommitAsync(directory.ImageOf(nodePath), cancellationToken).ConfigureAwait(false);
        CrashPoints.Hit("coalesce.committed");
        var chain = await Chain.ReadAsync(directory, null, cancellationToken).ConfigureAwait(false);
        foreach (var child in chain.ChildrenOf(node))
        {
            await QemuImg.RebaseUnsafeAsync(directory.ImageOf(directory.PathOf(child, QemuImg.Extension)), directory.BackingNameOf(parent, QemuImg.Extension), cancellationToken).ConfigureAwait(false);
            CrashPoints.Hit("coalesce.relinked-one");
        }
        directory.Delete(nodePath);
        directory.Delete(directory.PathOf(node, HiddenMarker));
        directory.SyncDirectory();
        RemoveJournal(directory, CoalesceJournal, node);
        sr.Logger.LogInformation("SR {Sr}: coalesced {Node} into {Parent}", sr.Uuid, node, parent);
    }

    /// <summary>Merges leaf <paramref name="leaf"/> with its hidden parent, whose merged file then takes the leaf's name.</summary>
    private async Task LeafCoalesceAsync(SrContext sr, ISrFileStore directory, string leaf, string parent, CancellationToken cancellationToken)
    {
        var parentPath = directory.PathOf(parent, QemuImg.Extension);
        if (directory.Exists(parentPath))
        {
            WriteJournal(directory, new Journal(LeafCoalesceJournal, leaf, parent, null, null));
            sr.Logger.LogInformation("SR {Sr}: coalescing leaf {Leaf} with its parent {Parent}", sr.Uuid, leaf, parent);
            await GrowToAsync(directory, parent, leaf, cancellationToken).ConfigureAwait(false);
            CrashPoints.Hit("leaf.journalled");
            await QemuImg.CommitAsync(directory.ImageOf(directory.PathOf(leaf, QemuImg.Extension)), cancellationToken).ConfigureAwait(false);
            CrashPoints.Hit("leaf.committed");
            directory.Move(parentPath, directory.PathOf(leaf, QemuImg.Extension));
            directory.SyncDirectory();
            CrashPoints.Hit("leaf.renamed");
        }
        directory.Delete(directory.PathOf(parent, HiddenMarker));
        directory.SyncDirectory();
        RemoveJournal(directory, LeafCoalesceJournal, leaf);
        sr.Logger.LogInformation("SR {Sr}: coalesced leaf {Leaf}; {Parent} is gone", sr.Uuid, leaf, parent);
    }

    // A child may have been resized past its parent: the parent grows first, so no data is cut.
    private static async Task GrowToAsync(ISrFileStore directory, string parent, string child, CancellationToken cancellationToken)
    {
        if (directory.TryReadHeader(directory.PathOf(parent, QemuImg.Extension), out var parentHeader)
            && directory.TryReadHeader(directory.PathOf(child, QemuImg.Extension), out var childHeader)
            && parentHeader.VirtualSize < childHeader.VirtualSize)
        {
            await QemuImg.ResizeAsync(directory.ImageOf(directory.PathOf(parent, QemuImg.Extension)), childHeader.VirtualSize, cancellationToken).ConfigureAwait(false);
        }
    }
}
