using Microsoft.AspNetCore.Http;
using Xapi.Model;
using Xapi.Server.Tasks;
using Xapi.Storage.DataPath;

namespace Xapi.Server.Http;

public sealed partial class VdiTransferEndpoint
{
    private static Task ImportVhdAsync(Stream body, IDiskImage image, long? length, VDIRef vdi, TaskManager.Binding binding) =>
        throw XenApiErrors.InternalError("Importing a VHD is not built yet");

    private static Task ExportVhdAsync(HttpContext context, IDiskImage image, IReadOnlyList<DiskExtent> extents, string disposition, VDIRef vdi, TaskManager.Binding binding) =>
        throw XenApiErrors.InternalError("Exporting a VHD is not built yet");
}
