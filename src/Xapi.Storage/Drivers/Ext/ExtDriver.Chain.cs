using Microsoft.Extensions.Logging;
using Xapi.Storage.Files;
using Xapi.Storage.Formats.Qcow2;

namespace Xapi.Storage.Drivers.Ext;

public partial class ExtDriver
{
    /// <summary>One image of the SR and where it sits in its chain.</summary>
    internal sealed record Node(string Uuid, string Path, string? Parent, VdiInfo Info)
    {
        public bool Hidden => Info.Hidden;
    }

    /// <summary>
    /// The SR's images as a forest of chains. An image whose backing file is anything but a
    /// sibling <c>&lt;uuid&gt;.qcow2</c> of this SR (as the store names it) is left out (and every image above it), so
    /// nothing the data path opens can reach outside the SR.
    /// </summary>
    internal sealed class Chain
    {
        private readonly Dictionary<string, List<string>> _children = new(StringComparer.Ordinal);

        private Chain(Dictionary<string, Node> nodes)
        {
            Nodes = nodes;
            foreach (var node in nodes.Values.Where(n => n.Parent is not null))
            {
                if (!_children.TryGetValue(node.Parent!, out var list))
                {
                    _children[node.Parent!] = list = [];
                }
                list.Add(node.Uuid);
            }
        }

        public Dictionary<string, Node> Nodes { get; }

        public IReadOnlyList<string> ChildrenOf(string uuid) => _children.TryGetValue(uuid, out var list) ? list : [];

        /// <summary>The node and its ancestors, nearest first.</summary>
        public List<string> Ancestry(string uuid)
        {
            var result = new List<string>();
            for (var current = (string?)uuid; current is not null && Nodes.TryGetValue(current, out var node) && result.Count <= MaxChainDepth * 2; current = node.Parent)
            {
                result.Add(current);
            }
            return result;
        }

        public static Task<Chain> ReadAsync(ISrFileStore directory, ILogger? logger, CancellationToken cancellationToken)
        {
            var (uuids, skipped) = directory.List(QemuImg.Extension);
            foreach (var name in skipped)
            {
                logger?.LogWarning("SR {Directory}: ignoring {Name}, which is not a regular file named after a uuid", directory.Root, name);
            }
            var headers = new Dictionary<string, Qcow2Header>(StringComparer.Ordinal);
            foreach (var uuid in uuids)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (directory.TryReadHeader(directory.PathOf(uuid, QemuImg.Extension), out var header))
                {
                    headers[uuid] = header;
                }
                else
                {
                    logger?.LogWarning("SR {Directory}: ignoring {Uuid}, which is not a readable qcow2 image", directory.Root, uuid);
                }
            }
            string? ParentOf(string uuid)
            {
                var backing = headers[uuid].BackingFile;
                if (backing is null)
                {
                    return null;
                }
                var stem = directory.UuidOfBacking(backing, QemuImg.Extension);
                return stem is not null && headers.ContainsKey(stem) ? stem : "";
            }
            // Keep only images whose whole chain is made of valid siblings.
            var valid = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (var uuid in headers.Keys)
            {
                var path = new List<string>();
                var ok = true;
                for (var current = (string?)uuid; current is not null; current = ParentOf(current))
                {
                    if (current.Length == 0 || path.Contains(current) || path.Count > MaxChainDepth * 2)
                    {
                        ok = false;
                        break;
                    }
                    path.Add(current);
                }
                if (ok)
                {
                    valid[uuid] = ParentOf(uuid);
                }
                else
                {
                    logger?.LogWarning("SR {Directory}: ignoring {Uuid}, whose backing file {Backing} is not an image of this SR", directory.Root, uuid, headers[uuid].BackingFile);
                }
            }
            var parents = valid.Values.Where(p => p is not null).ToHashSet(StringComparer.Ordinal);
            var nodes = new Dictionary<string, Node>(StringComparer.Ordinal);
            foreach (var (uuid, parent) in valid)
            {
                var path = directory.PathOf(uuid, QemuImg.Extension);
                var hidden = parents.Contains(uuid) || directory.Exists(directory.PathOf(uuid, HiddenMarker));
                nodes[uuid] = new Node(uuid, path, parent, new VdiInfo
                {
                    Uuid = uuid,
                    Location = uuid,
                    VirtualSize = headers[uuid].VirtualSize,
                    PhysicalUtilisation = directory.AllocatedBytes(path),
                    Hidden = hidden,
                    ReadOnly = hidden,
                    ParentUuid = parent,
                });
            }
            return Task.FromResult(new Chain(nodes));
        }
    }
}
