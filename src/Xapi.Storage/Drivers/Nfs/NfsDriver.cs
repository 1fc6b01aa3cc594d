using System.Security;
using System.Text;
using Xapi.Storage.Drivers.Ext;
using Xapi.Storage.Files;

namespace Xapi.Storage.Drivers.Nfs;

/// <summary>
/// The NFS SR: the ext driver's layout and chain logic (qcow2 chains, hidden markers, journals,
/// the collector) in <c>serverpath/&lt;sr-uuid&gt;</c> on an NFS export, reached without a kernel
/// mount: file operations through libnfs over NFSv3 (<see cref="NfsSrFileStore"/>), images through
/// qemu-img and qemu-nbd with <c>nfs://</c> URLs (Debian's qemu-block-extra). Because qemu 7.2
/// cannot commit into a backing file on <c>nfs://</c>, its collector merges a chain by letting the
/// child absorb its parent (a safe rebase) rather than committing the child into the parent.
/// </summary>
public sealed class NfsDriver : ExtDriver
{
    public override SmDescription Description { get; } = new(
        "nfs", "NFS VHD", "SR plugin which stores disks as qcow2 files on a remote NFS filesystem", "xapi-dotnet", "1.0",
        [
            new(SmFeatures.SrProbe), new(SmFeatures.SrCaching), new(SmFeatures.SrUpdate), new(SmFeatures.ThinProvisioning),
            new(SmFeatures.VdiActivate), new(SmFeatures.VdiAttach), new(SmFeatures.VdiClone), new(SmFeatures.VdiCreate),
            new(SmFeatures.VdiDeactivate), new(SmFeatures.VdiDelete), new(SmFeatures.VdiDetach), new(SmFeatures.VdiGenerateConfig),
            new(SmFeatures.VdiMirror), new(SmFeatures.VdiResize), new(SmFeatures.VdiSnapshot), new(SmFeatures.VdiUpdate),
        ],
        [
            new(NfsLocation.ServerKey, "hostname or IP address of NFS server (required)"),
            new(NfsLocation.ServerPathKey, "path on remote server (required)"),
            new(NfsLocation.NfsVersionKey, "NFS protocol version - 3 (4 is refused: see the driver's error)"),
        ]);

    protected override ISrFileStore StoreOf(SrContext sr) => NfsSrFileStore.Open(NfsLocation.Parse(sr.DeviceConfig, sr.SmConfig), sr.Uuid);

    /// <summary>
    /// Without serverpath: fails with ConfigServerPathMissing carrying the server's export list
    /// (NFSSR's XML) as its detail. With it: the uuid-named directories there, as an SRlist.
    /// </summary>
    public override ValueTask<string> ProbeAsync(ProbeContext probe, CancellationToken cancellationToken)
    {
        var location = NfsLocation.Parse(probe.DeviceConfig, probe.SmConfig, requireServerPath: false);
        if (location.ServerPath.Length == 0)
        {
            var exports = LibNfs.Exports(location.Server)
                ?? throw new SmException(NfsErrors.NfsTarget, "Unable to detect an NFS service on this target.", location.Server);
            var list = new StringBuilder("<?xml version=\"1.0\" ?>\n<nfs-exports>\n");
            foreach (var (path, groups) in exports)
            {
                list.Append("\t<Export>\n\t\t<Target>").Append(Escape(location.Server)).Append("</Target>\n\t\t<Path>").Append(Escape(path))
                    .Append("</Path>\n\t\t<Accesslist>").Append(Escape(groups.Count == 0 ? "*" : string.Join(',', groups))).Append("</Accesslist>\n\t</Export>\n");
            }
            list.Append("</nfs-exports>\n");
            throw new SmException(SmErrors.ConfigServerPathMissing, "The request is missing the serverpath parameter", list.ToString());
        }
        using var nfs = NfsSrFileStore.MountOf(location);
        var xml = new StringBuilder("<?xml version=\"1.0\" ?>\n<SRlist>\n");
        foreach (var name in nfs.ReadDirectory("/").Where(e => e.IsDirectory && SrDirectory.IsUuid(e.Name)).Select(e => e.Name).Order(StringComparer.Ordinal))
        {
            xml.Append("\t<SR>\n\t\t<UUID>").Append(name).Append("</UUID>\n\t</SR>\n");
        }
        xml.Append("</SRlist>\n");
        return ValueTask.FromResult(xml.ToString());
    }

    private static string Escape(string value) => SecurityElement.Escape(value);
}
