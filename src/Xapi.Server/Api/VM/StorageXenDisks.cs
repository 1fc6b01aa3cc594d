using Xapi.Database;
using Xapi.LibXenCtrl.Interop;
using Xapi.Model;
using Xapi.Storage.Service;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// What libxl attaches for a VM's disk on Xen: the SR's driver attaches the VDI (as xapi has SM
/// do before the VBD is plugged) and says where its image is and in which format; raw images go
/// to blkback and qcow2 chains to qemu's qdisk.
/// </summary>
internal sealed class StorageXenDisks(XapiDatabase database, StorageManager storage)
{
    public async ValueTask<XenDisk?> AttachAsync(DomainConfig domain, VbdConfig vbd, CancellationToken cancellationToken)
    {
        var hvm = domain.Type == Xapi.Xenops.DomainType.Hvm;
        if (vbd.Disk is not { } binding)
        {
            // qemu makes an HVM guest's drives at boot only: an empty CD drive is given to it
            // empty so that a disc can be inserted later.
            return hvm && vbd.Kind == Xapi.Xenops.VbdKind.CdRom && DeviceNumber.Parse(vbd.Device, hvm) is { } drive
                ? XenDisk.EmptyDrive(drive.ToLibxlDevice())
                : null;
        }
        var snapshot = database.Snapshot;
        if (!snapshot.TryGetByUuid(VDIRef.Class, binding.Id, out var row))
        {
            throw new InvalidDomainRequestException(domain.Uuid, $"VBD {vbd.Device}: VDI {binding.Id} does not exist");
        }
        var vdi = snapshot.Get(new VDIRef(row.Ref));
        var context = storage.PluggedContext(snapshot, vdi.SR);
        var driver = storage.DriverOf(snapshot.Get(vdi.SR));
        var attachment = await storage.RunAsync(vdi.SR, async () =>
            await driver.AttachVdiAsync(context, StorageRecords.InfoOf(vdi), vbd.Mode == Xapi.Xenops.VbdMode.ReadWrite, cancellationToken));
        var guestDevice = DeviceNumber.Parse(vbd.Device, hvm)?.ToLibxlDevice();
        return new XenDisk(attachment.Path, attachment.Format, XenDisk.BackendFor(attachment.Format), guestDevice);
    }
}
