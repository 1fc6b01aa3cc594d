using System.Globalization;
using System.Net.Sockets;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// Network hotplug, moving a VIF between networks, and the guest's static address settings
/// (xapi_vif.ml, xapi_xenops.ml vif_*). Device changes hold the VM, drive the seam and end with
/// the runtime's fold, like the VBD operations.
/// </summary>
public sealed partial class VIFApi
{
    // What a guest agent advertises when it can apply static IP settings (xapi_vif.ml).
    private const string StaticIpSettingFeature = "feature-static-ip-setting";

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VifOperations>(VifOperations.Plug)]
    public async ValueTask Plug(CallContext context, VIFRef self)
    {
        var (vm, uuid) = VmOf(context, self);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        DeviceOperations.AssertRunning(context.Snapshot.Get(vm));
        await PlugHeldAsync(context, self, vm, uuid, hold);
    }

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VifOperations>(VifOperations.Unplug)]
    public async ValueTask Unplug(CallContext context, VIFRef self) => await UnplugAsync(context, self, force: false);

    /// <summary>Registers as <c>unplug</c>, as on real hosts: VIFs have no unplug_force operation.</summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VifOperations>(VifOperations.Unplug)]
    public async ValueTask UnplugForce(CallContext context, VIFRef self) => await UnplugAsync(context, self, force: true);

    /// <summary>
    /// Connects the VIF to another network; a plugged one moves live (here: unplugged from the
    /// old bridge and plugged into the new one). Not an operation of its own on real hosts.
    /// </summary>
    public async ValueTask Move(CallContext context, VIFRef self, NetworkRef network)
    {
        var (vm, uuid) = VmOf(context, self);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var snapshot = context.Snapshot;
        var owner = snapshot.Get(vm);
        var target = snapshot.Get(network);
        var active = snapshot.Get(self).CurrentlyAttached && owner.PowerState != VmPowerState.Suspended;
        if (active && !Reachable(snapshot, target, owner.ResidentOn))
        {
            throw XenApiErrors.HostCannotAttachNetwork(owner.ResidentOn.Value, network.Value);
        }
        context.Write(tx => tx.Update(self, v => v.Network = network));
        await context.SettledAsync();
        if (!active)
        {
            return;
        }
        await UnplugHeldAsync(context, self, vm, uuid, force: false, hold);
        await PlugHeldAsync(context, self, vm, uuid, hold);
    }

    public ValueTask ConfigureIpv4(CallContext context, VIFRef self, VifIpv4ConfigurationMode mode, string address, string gateway)
    {
        context.Write(tx =>
        {
            var vif = tx.Get(self);
            if (mode == VifIpv4ConfigurationMode.Static)
            {
                AssertStaticSettings(vif, AddressFamily.InterNetwork, vif.Ipv4Allowed, address, gateway);
            }
            AssertGuestSetsAddresses(tx, vif);
            tx.Update(self, v =>
            {
                v.Ipv4ConfigurationMode = mode;
                v.Ipv4Addresses = [address];
                v.Ipv4Gateway = gateway;
            });
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask ConfigureIpv6(CallContext context, VIFRef self, VifIpv6ConfigurationMode mode, string address, string gateway)
    {
        context.Write(tx =>
        {
            var vif = tx.Get(self);
            if (mode == VifIpv6ConfigurationMode.Static)
            {
                AssertStaticSettings(vif, AddressFamily.InterNetworkV6, vif.Ipv6Allowed, address, gateway);
            }
            AssertGuestSetsAddresses(tx, vif);
            tx.Update(self, v =>
            {
                v.Ipv6ConfigurationMode = mode;
                v.Ipv6Addresses = [address];
                v.Ipv6Gateway = gateway;
            });
        });
        return ValueTask.CompletedTask;
    }

    /// <summary>A static address is a CIDR of the family, allowed by a locked VIF, with an address of the family as gateway (or none).</summary>
    private static void AssertStaticSettings(VIFRecord vif, AddressFamily family, IReadOnlyList<string> allowed, string address, string gateway)
    {
        var parsed = IpAddresses.CidrAddress(family, address) ?? throw XenApiErrors.InvalidCidrAddressSpecified(nameof(address));
        // A network's default is never "locked": only the VIF's own mode can lock it.
        if (vif.LockingMode == VifLockingMode.Locked && !allowed.Contains(parsed))
        {
            throw XenApiErrors.AddressViolatesLockingConstraint(address);
        }
        if (gateway.Length > 0 && !IpAddresses.IsValid(family, gateway))
        {
            throw XenApiErrors.InvalidIpAddressSpecified(nameof(gateway));
        }
    }

    /// <summary>
    /// The guest's agent applies the settings, so it must say it can, whatever the mode: real
    /// hosts ask this even to clear the settings (mode None).
    /// </summary>
    private static void AssertGuestSetsAddresses(Transaction tx, VIFRecord vif)
    {
        var vm = tx.Get(vif.VM);
        if (!tx.TryGet(vm.GuestMetrics, out var guest) || !guest.Other.TryGetValue(StaticIpSettingFeature, out var value) || value is not "1")
        {
            throw XenApiErrors.VmLacksFeature(vm.Ref.Value);
        }
    }

    private async ValueTask UnplugAsync(CallContext context, VIFRef self, bool force)
    {
        var (vm, uuid) = VmOf(context, self);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        DeviceOperations.AssertRunning(context.Snapshot.Get(vm));
        await UnplugHeldAsync(context, self, vm, uuid, force, hold);
    }

    private async ValueTask PlugHeldAsync(CallContext context, VIFRef self, VMRef vm, Guid uuid, VmRuntime.Hold hold)
    {
        var snapshot = context.Snapshot;
        var device = snapshot.Get(self).Device;
        // The same description of the device as at VM.start.
        if (DomainConfigs.Of(snapshot, snapshot.Get(vm)).Vifs.FirstOrDefault(v => v.Device.ToString(CultureInfo.InvariantCulture) == device) is { } config)
        {
            await runtime.RunHeldAsync(context, vm, uuid, hold, async token =>
            {
                try
                {
                    await runtime.Hypervisor.PlugVifAsync(uuid, config, token);
                }
                catch (DeviceAlreadyExistsException)
                {
                    // Plugged already: the fold records it.
                }
            });
        }
        if (!context.Snapshot.Get(self).CurrentlyAttached)
        {
            throw XenApiErrors.InternalError($"vif_plug: Unable to plug VIF {self.Value}");
        }
    }

    private async ValueTask UnplugHeldAsync(CallContext context, VIFRef self, VMRef vm, Guid uuid, bool force, VmRuntime.Hold hold)
    {
        if (OcamlInt.TryParseUnsignedDecimal(context.Snapshot.Get(self).Device, out var number) && number <= int.MaxValue)
        {
            await runtime.RunHeldAsync(context, vm, uuid, hold, async token =>
            {
                try
                {
                    await runtime.Hypervisor.UnplugVifAsync(uuid, (int)number, force, token);
                }
                catch (DeviceNotFoundException)
                {
                    // Not plugged: the fold records it detached.
                }
            });
        }
        if (context.Snapshot.Get(self).CurrentlyAttached)
        {
            throw XenApiErrors.InternalError($"vif_unplug: Unable to unplug VIF {self.Value}");
        }
    }

    /// <summary>A network with physical interfaces needs one on the host; an internal one is reachable from any.</summary>
    private static bool Reachable(IRowReader db, NetworkRecord network, HostRef host)
    {
        var pifs = network.PIFs.Where(db.Exists).Select(db.Get).ToList();
        return pifs.Count == 0 || !network.Managed || pifs.Any(p => p.Host == host);
    }

    private static (VMRef Vm, Guid Uuid) VmOf(CallContext context, VIFRef vif)
    {
        var vm = context.Snapshot.Get(vif).VM;
        return (vm, Guid.Parse(context.Snapshot.Get(vm).Uuid));
    }
}
