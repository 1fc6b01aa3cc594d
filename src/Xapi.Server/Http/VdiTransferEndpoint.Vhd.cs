using Microsoft.AspNetCore.Http;
using Xapi.Model;
using Xapi.Server.Tasks;
using Xapi.Storage.DataPath;
using Xapi.Storage.Formats.Vhd;

namespace Xapi.Server.Http;

public sealed partial class VdiTransferEndpoint
{
    /// <summary>
    /// A VHD stream applied to the VDI: checked (footer and header checksums, block table inside
    /// the file and the disk) before the first write; a dynamic VHD leaves the disk reading exactly
    /// as the VHD does, a differencing one is laid over what the disk holds (restoring deltas in order).
    /// </summary>
    private static async Task ImportVhdAsync(Stream body, IDiskImage image, long? length, VDIRef vdi, TaskManager.Binding binding)
    {
        try
        {
            await VhdImport.ImportAsync(body, length, image, new VhdImportOptions(), (done, total) => binding.Progress(total > 0 ? (double)done / total : 0), binding.Cancellation);
        }
        catch (VhdTooLargeException e)
        {
            throw XenApiErrors.VdiTooSmall(vdi.Value, e.VirtualSize.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (VhdFormatException e)
        {
            // The real server's answer to any unreadable VHD; the reason says what was wrong.
            throw XenApiErrors.VdiIoError("Device I/O errors", e.Message);
        }
    }

    /// <summary>A sparse dynamic VHD of the data extents, or with <c>base=</c> a differencing VHD of what changed since the base.</summary>
    private async Task ExportVhdAsync(HttpContext context, IDiskImage image, IReadOnlyList<DiskExtent> extents, string disposition, VDIRef vdi, VDIRef baseVdi, TaskManager.Binding binding)
    {
        if (image.Size > VhdFormat.MaxVirtualSize)
        {
            throw XenApiErrors.VdiTooLarge(vdi.Value, VhdFormat.MaxVirtualSize.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        VhdParent? parent = null;
        if (!baseVdi.IsNull)
        {
            var baseRecord = database.Snapshot.Get(baseVdi);
            parent = new VhdParent(Guid.Parse(baseRecord.Uuid), new DateTimeOffset(baseRecord.SnapshotTime), baseRecord.Uuid + ".vhd");
        }
        var plan = await VhdExport.PlanAsync(image, ToAsync(extents), new VhdExportOptions { Parent = parent, UniqueId = Guid.Parse(database.Snapshot.Get(vdi).Uuid) }, binding.Cancellation);
        context.Response.ContentLength = plan.Length;
        await StartResponseAsync(database, context, "application/vhd", disposition);
        await plan.WriteToAsync(context.Response.Body, (done, total) => binding.Progress(total > 0 ? (double)done / total : 0), binding.Cancellation);
    }

    private static async IAsyncEnumerable<DiskExtent> ToAsync(IReadOnlyList<DiskExtent> extents)
    {
        await Task.CompletedTask;
        foreach (var extent in extents)
        {
            yield return extent;
        }
    }
}
