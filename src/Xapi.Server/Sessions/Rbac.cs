using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using Xapi.Model;

namespace Xapi.Server.Sessions;

/// <summary>
/// The roles as real hosts publish them: a permission role per message (named as its wire
/// name in lower case, e.g. <c>vm.start</c>) plus <c>task.destroy/any</c>, and seven
/// composite roles whose <c>subroles</c> list, flat, every permission the role holds.
/// XenCenter decides what a non-superuser may do from those lists.
/// </summary>
public static class Rbac
{
    /// <summary>One permission or composite role, with its stable identity.</summary>
    public sealed record RoleEntry(string Uuid, string NameLabel, string Description, IReadOnlyList<string> Subroles, bool IsInternal)
    {
        public string Ref => "OpaqueRef:" + Uuid;
    }

    /// <summary>What real hosts call every permission role.</summary>
    public const string PermissionDescription = "A basic permission";

    /// <summary>Lets pool operators destroy and cancel other users' tasks.</summary>
    public const string DestroyAnyTask = "task.destroy/any";

    private static readonly (RoleSet Role, string Description)[] Composites =
    [
        (RoleSet.PoolAdmin, "The Pool Administrator role has full access to all features and settings, including accessing Dom0 and managing subjects, roles and external authentication"),
        (RoleSet.PoolOperator, "The Pool Operator role manages host- and pool-wide resources, including setting up storage, creating resource pools and managing patches, high availability (HA) and workload balancing (WLB)"),
        (RoleSet.VmPowerAdmin, "The VM Power Administrator role has full access to VM and template management and can choose where to start VMs and use the dynamic memory control and VM snapshot features"),
        (RoleSet.VmAdmin, "The VM Administrator role can manage VMs and templates"),
        (RoleSet.VmOperator, "The VM Operator role can use VMs and interact with VM consoles"),
        (RoleSet.ClientCert, "The Client Certificate role has access to functionality granted to those who authenticate using a client certificate"),
        (RoleSet.ReadOnly, "The Read-Only role can log in with basic read-only access"),
    ];

    // The order in which real hosts list the composite roles after the permissions.
    private static readonly RoleSet[] ListedOrder =
        [RoleSet.VmPowerAdmin, RoleSet.VmAdmin, RoleSet.VmOperator, RoleSet.ReadOnly, RoleSet.ClientCert, RoleSet.PoolAdmin, RoleSet.PoolOperator];

    /// <summary>Each permission's original-case name (its uuid derives from it) and the roles holding it.</summary>
    private static readonly IReadOnlyList<(string Name, RoleSet Roles)> Permissions = BuildPermissions();

    private static readonly FrozenDictionary<string, RoleSet> RolesByPermission =
        Permissions.ToFrozenDictionary(p => p.Name.ToLowerInvariant(), p => p.Roles, StringComparer.Ordinal);

    /// <summary>Every role record, as <c>role.get_all</c> lists them: permissions first, then the composite roles.</summary>
    public static readonly IReadOnlyList<RoleEntry> All = BuildEntries();

    private static List<(string Name, RoleSet Roles)> BuildPermissions()
    {
        var permissions = new List<(string, RoleSet)>();
        foreach (var cls in ApiSchema.Classes)
        {
            foreach (var message in cls.Messages)
            {
                // Messages no role may call (local root only) belong to no role and are not listed.
                if (message.Roles != RoleSet.None)
                {
                    permissions.Add((message.WireName, message.Roles));
                }
            }
        }
        permissions.Add((DestroyAnyTask, RoleSet.PoolAdmin | RoleSet.PoolOperator));
        return permissions;
    }

    private static List<RoleEntry> BuildEntries()
    {
        var entries = Permissions
            .Select(p => new RoleEntry(UuidOf(p.Name), p.Name.ToLowerInvariant(), PermissionDescription, [], IsInternal: true))
            .ToList();
        foreach (var role in ListedOrder)
        {
            var (_, description) = Composites.First(c => c.Role == role);
            var name = Roles.NameOf(role);
            var subroles = Permissions.Where(p => p.Roles.HasFlag(role)).Select(p => "OpaqueRef:" + UuidOf(p.Name)).ToArray();
            entries.Add(new RoleEntry(UuidOf(name), name, description, subroles, IsInternal: role == RoleSet.ClientCert));
        }
        return entries;
    }

    /// <summary>Real hosts derive a role's uuid from the MD5 of its name, so every host agrees on it.</summary>
    public static string UuidOf(string name)
    {
        var hash = MD5.HashData(Encoding.UTF8.GetBytes(name));
        return Convert.ToHexStringLower(hash).Insert(20, "-").Insert(16, "-").Insert(12, "-").Insert(8, "-");
    }

    /// <summary>The permission names a session of these roles holds, with the roles' own names, as real hosts store them.</summary>
    public static IReadOnlyList<string> PermissionNamesOf(RoleSet roles)
    {
        var names = new List<string>();
        foreach (var (role, _) in Composites)
        {
            if (roles.HasFlag(role))
            {
                names.Add(Roles.NameOf(role));
            }
        }
        names.AddRange(Permissions.Where(p => (p.Roles & roles) != 0).Select(p => p.Name.ToLowerInvariant()));
        return names.Distinct(StringComparer.Ordinal).ToArray();
    }

    /// <summary>The permission a call needs: its sync wire name in lower case.</summary>
    public static string PermissionOf(MessageMeta message) => message.WireName.ToLowerInvariant();

    /// <summary>RBAC_PERMISSION_DENIED as real hosts word it, naming the roles that would do.</summary>
    public static XenApiException Denied(string permission)
    {
        var holders = RolesByPermission.TryGetValue(permission, out var roles)
            ? ListedOrder.Where(r => roles.HasFlag(r)).Select(Roles.NameOf)
            : [];
        return XenApiErrors.RbacPermissionDenied(permission, $"No permission in user session. (Roles with this permission: {string.Join(", ", holders)})");
    }
}
