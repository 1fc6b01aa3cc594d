using Xapi.Database;
using Xapi.Database.Replication;
using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>
/// What a joining host brings into the pool's database, as new rows with their refs and uuids
/// kept: its host with metrics and CPUs, its control domain, PIFs, local SRs with their PBDs and
/// VDIs, its VMs, and the sessions and tasks of its clients (so a call in progress, the join
/// itself included, goes on in the pool). The pool's master commits them in one transaction, so
/// a join adds all of them or none (real hosts push them one API call at a time, and carry on
/// past failures).
/// Left behind, as on real hosts: the joiner's pool object, its default templates (the pool has
/// its own), its messages, and what the pool already holds: rows with the same ref (roles), an SM
/// of a type the pool has, rows with a uuid the pool has. A network with a physical PIF joins the
/// pool's network on the same bridge; another network whose bridge the pool already uses gets a
/// new one. References to what is left behind are rewritten to the pool's objects.
/// </summary>
internal static class JoinContribution
{
    private const string GeneratedBridgePrefix = "xapi";

    public static List<RowChange> Of(DbSnapshot mine, DbSnapshot pool)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        var left = new HashSet<string>(StringComparer.Ordinal);
        var poolRef = pool.All(PoolRef.Class).Select(r => r.Ref).Single();
        foreach (var row in mine.All(PoolRef.Class))
        {
            map[row.Ref] = poolRef;
        }
        foreach (var row in mine.All(MessageRef.Class))
        {
            left.Add(row.Ref);
        }
        foreach (var sm in mine.All<SMRecord>())
        {
            if (pool.All<SMRecord>().FirstOrDefault(p => p.Type == sm.Type) is { } same)
            {
                map[sm.Ref.Value] = same.Ref.Value;
            }
        }
        foreach (var vm in mine.All<VMRecord>().Where(v => v.IsDefaultTemplate))
        {
            left.Add(vm.Ref.Value);
            left.UnionWith(new[] { vm.Metrics.Value, vm.GuestMetrics.Value }.Where(r => r != XType.NullRef));
        }
        var physicalNetworks = mine.All<PIFRecord>().Where(p => p.Physical).Select(p => p.Network.Value).ToHashSet(StringComparer.Ordinal);
        foreach (var network in mine.All<NetworkRecord>())
        {
            if (physicalNetworks.Contains(network.Ref.Value) && pool.All<NetworkRecord>().FirstOrDefault(n => n.Bridge == network.Bridge) is { } same)
            {
                map[network.Ref.Value] = same.Ref.Value;
            }
        }
        foreach (var cls in ApiSchema.Classes)
        {
            foreach (var row in mine.All(cls))
            {
                if (pool.Exists(cls, row.Ref))
                {
                    map[row.Ref] = row.Ref;
                }
                else if (!map.ContainsKey(row.Ref) && row.Uuid.Length > 0 && pool.TryGetByUuid(cls, row.Uuid, out var same))
                {
                    map[row.Ref] = same.Ref;
                }
            }
        }
        LeaveChildrenOfWhatIsLeft(mine, left, map);

        var bridges = pool.All<NetworkRecord>().Select(n => n.Bridge).Concat(mine.All<NetworkRecord>().Select(n => n.Bridge)).ToHashSet(StringComparer.Ordinal);
        var poolBridges = pool.All<NetworkRecord>().Select(n => n.Bridge).ToHashSet(StringComparer.Ordinal);
        var changes = new List<RowChange>();
        foreach (var cls in ApiSchema.Classes)
        {
            foreach (var row in mine.All(cls))
            {
                if (left.Contains(row.Ref) || map.ContainsKey(row.Ref))
                {
                    continue;
                }
                var values = Remapped(cls, row.Values, map);
                if (cls == NetworkRef.Class && poolBridges.Contains((string)values[NetworkFields.Bridge]!))
                {
                    values[NetworkFields.Bridge] = FreeBridge(bridges);
                }
                changes.Add(new RowChange(cls, row.Ref, null, values));
            }
        }
        return changes;
    }

    // Rows that point (as children) at rows left behind stay behind too: a default template's VBDs and VIFs.
    private static void LeaveChildrenOfWhatIsLeft(DbSnapshot mine, HashSet<string> left, Dictionary<string, string> map)
    {
        bool grew;
        do
        {
            grew = false;
            foreach (var relation in RelationIndex.All)
            {
                var cls = relation.PointerField.Owner;
                foreach (var row in mine.All(cls))
                {
                    if (!left.Contains(row.Ref) && !map.ContainsKey(row.Ref)
                        && row.Values[relation.PointerField.Ordinal] is string parent && left.Contains(parent) && left.Add(row.Ref))
                    {
                        grew = true;
                    }
                }
            }
        }
        while (grew);
    }

    private static object?[] Remapped(ClassMeta cls, IReadOnlyList<object?> values, Dictionary<string, string> map)
    {
        var copy = values.ToArray();
        foreach (var field in cls.Fields)
        {
            if (field.References is null)
            {
                continue;
            }
            copy[field.Ordinal] = copy[field.Ordinal] switch
            {
                string reference => map.GetValueOrDefault(reference, reference),
                IReadOnlyList<object?> references when references.Any(r => r is string s && map.ContainsKey(s)) =>
                    references.Select(r => r is string s ? map.GetValueOrDefault(s, s) : r).ToArray(),
                var other => other,
            };
        }
        return copy;
    }

    private static string FreeBridge(HashSet<string> used)
    {
        for (var number = 0; ; number++)
        {
            var candidate = GeneratedBridgePrefix + number.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (used.Add(candidate))
            {
                return candidate;
            }
        }
    }
}
