using Microsoft.Extensions.Logging;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

public partial class ExtDriver
{
    private const string AbsorbJournal = "absorb";

    /// <summary>
    /// The collector where <c>qemu-img commit</c> cannot write into a backing file (qemu 7.2 over
    /// <c>nfs://</c>): a node that is its hidden parent's only child absorbs the parent instead,
    /// by a safe rebase onto the grandparent that first copies in every cluster the two backings
    /// read differently. The node reads the same at every moment of it, so no VDI's content changes.
    /// </summary>
    private async Task<GcStep> AbsorbStepAsync(SrContext sr, ISrFileStore directory, Chain chain, Func<string, bool> inUse, CancellationToken cancellationToken)
    {
        bool OnlyChildOfHiddenParent(Node node) =>
            node.Parent is { } parent && chain.Nodes[parent].Hidden && chain.ChildrenOf(parent).Count == 1;

        var deferred = false;
        foreach (var node in chain.Nodes.Values.Where(OnlyChildOfHiddenParent).OrderBy(n => n.Hidden ? 0 : 1).ThenBy(n => n.Uuid, StringComparer.Ordinal))
        {
            var parent = chain.Nodes[node.Parent!];
            // The parent is removed at the end, and over NFS a removed file is gone even for a
            // reader that holds it open, so nothing may be reading through it.
            if (SelfAndDescendants(chain, node.Uuid).Any(inUse) || Available(directory) < parent.Info.PhysicalUtilisation)
            {
                deferred = true;
                continue;
            }
            await AbsorbAsync(sr, directory, node.Uuid, parent.Uuid, parent.Parent, cancellationToken).ConfigureAwait(false);
            return new GcStep(node.Hidden ? GcStepKind.Coalesced : GcStepKind.LeafCoalesced, [parent.Uuid]);
        }
        return deferred ? new GcStep(GcStepKind.Deferred, []) : GcStep.Idle;
    }

    private static IEnumerable<string> SelfAndDescendants(Chain chain, string uuid)
    {
        yield return uuid;
        foreach (var child in chain.ChildrenOf(uuid))
        {
            foreach (var descendant in SelfAndDescendants(chain, child))
            {
                yield return descendant;
            }
        }
    }

    /// <summary>Makes <paramref name="child"/> read through <paramref name="grandparent"/> with <paramref name="parent"/>'s data copied in, then removes the parent. Every step may be run again.</summary>
    private async Task AbsorbAsync(SrContext sr, ISrFileStore directory, string child, string parent, string? grandparent, CancellationToken cancellationToken)
    {
        var parentPath = directory.PathOf(parent, QemuImg.Extension);
        if (directory.Exists(parentPath))
        {
            WriteJournal(directory, new Journal(AbsorbJournal, child, parent, grandparent, null));
            // Hidden only by having a child, the parent would show up as a VDI once it has none.
            MarkHidden(directory, parent);
            sr.Logger.LogInformation("SR {Sr}: {Child} absorbs its parent {Parent}", sr.Uuid, child, parent);
            CrashPoints.Hit("absorb.journalled");
            var backing = grandparent is null ? null : directory.BackingNameOf(grandparent, QemuImg.Extension);
            await QemuImg.RebaseAsync(directory.ImageOf(directory.PathOf(child, QemuImg.Extension)), backing, cancellationToken).ConfigureAwait(false);
            CrashPoints.Hit("absorb.rebased");
            directory.Delete(parentPath);
        }
        directory.Delete(directory.PathOf(parent, HiddenMarker));
        directory.SyncDirectory();
        RemoveJournal(directory, AbsorbJournal, child);
        sr.Logger.LogInformation("SR {Sr}: {Child} absorbed {Parent}, which is gone", sr.Uuid, child, parent);
    }
}
