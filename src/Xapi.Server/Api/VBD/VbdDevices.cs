using Xapi.Model;

namespace Xapi.Server.Api;

/// <summary>
/// Which block device numbers a VM has free, as real hosts count them (xapi_vm_helpers.ml):
/// 0–254 (0–255 for a control domain), IDE for an HVM guest's first four, minus every device
/// an existing VBD's <c>device</c> or <c>userdevice</c> can name.
/// </summary>
internal static class VbdDevices
{
    public static bool WillHaveQemu(VMRecord vm) => vm.DomainType == DomainType.Hvm;

    /// <summary>Every device the VM's VBDs use, under every reading of their names.</summary>
    public static HashSet<DeviceNumber> Used(IRowReader db, VMRef vm)
    {
        var used = new HashSet<DeviceNumber>();
        foreach (var vbd in db.Get(vm).VBDs)
        {
            if (db.TryGet(vbd, out var record))
            {
                used.UnionWith(DeviceNumber.Interpretations(record.Device));
                used.UnionWith(DeviceNumber.Interpretations(record.Userdevice));
            }
        }
        return used;
    }

    /// <summary>The free devices for a VBD of <paramref name="type"/>, ascending; null when the type is not supported (a floppy on a PV guest).</summary>
    public static IReadOnlyList<DeviceNumber>? Free(IRowReader db, VMRecord vm, VbdType type)
    {
        var hvm = WillHaveQemu(vm);
        IEnumerable<DeviceNumber?> candidates;
        if (type == VbdType.Floppy)
        {
            if (!hvm)
            {
                return null;
            }
            candidates = Enumerable.Range(0, 2).Select(n => (DeviceNumber?)new DeviceNumber(DeviceBus.Floppy, n, 0));
        }
        else
        {
            var last = !hvm && vm.IsControlDomain ? 255 : 254;
            candidates = Enumerable.Range(0, last + 1).Select(n => DeviceNumber.OfDiskNumber(hvm, n));
        }
        var used = Used(db, vm.Ref);
        return candidates.OfType<DeviceNumber>().Where(d => !used.Contains(d)).ToList();
    }
}
