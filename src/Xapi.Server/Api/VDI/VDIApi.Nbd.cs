using System.Security.Cryptography.X509Certificates;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Http;

namespace Xapi.Server.Api;

public sealed partial class VDIApi
{
    /// <summary>Set once the NBD server runs; null while it is off.</summary>
    internal NbdEndpoint? Nbd { get; set; }

    /// <summary>
    /// Where the VDI can be read over NBD: for each host with the SR plugged, each address of its
    /// attached PIFs on networks whose purpose is <c>nbd</c> or <c>insecure_nbd</c>; empty without
    /// such a network, as on real hosts.
    /// </summary>
    public ValueTask<IReadOnlyList<object?>> GetNbdInfo(CallContext context, VDIRef self)
    {
        var snapshot = context.Snapshot;
        var vdi = snapshot.Get(self);
        if (vdi.Type == VdiType.CbtMetadata)
        {
            throw XenApiErrors.VdiIncompatibleType(self.Value, VdiType.CbtMetadata.ToWire());
        }
        var result = new List<object?>();
        if (Nbd?.EndPoint is not { } endPoint)
        {
            return ValueTask.FromResult<IReadOnlyList<object?>>(result);
        }
        var fields = VdiNbdServerInfoRef.Class.Fields;
        var certificate = Nbd.Certificate is { } cert ? cert.ExportCertificatePem() : "";
        foreach (var pbd in snapshot.All<PBDRecord>().Where(p => p.SR == vdi.SR && p.CurrentlyAttached))
        {
            var host = snapshot.Get(pbd.Host);
            foreach (var pif in snapshot.All<PIFRecord>().Where(p => p.Host == pbd.Host && p.CurrentlyAttached && p.IP.Length > 0))
            {
                var purposes = snapshot.Get(pif.Network).Purpose;
                if (!purposes.Contains(NetworkPurpose.Nbd) && !purposes.Contains(NetworkPurpose.InsecureNbd))
                {
                    continue;
                }
                result.Add(ValueMap.FromPairs([
                    new(fields[VdiNbdServerInfoFields.Exportname].Name, NbdEndpoint.ExportName(vdi.Uuid, context.RequiredSession)),
                    new(fields[VdiNbdServerInfoFields.Address].Name, pif.IP),
                    new(fields[VdiNbdServerInfoFields.Port].Name, (long)endPoint.Port),
                    new(fields[VdiNbdServerInfoFields.Cert].Name, certificate),
                    new(fields[VdiNbdServerInfoFields.Subject].Name, Nbd.Certificate?.GetNameInfo(X509NameType.DnsName, false) ?? host.Hostname),
                ]));
            }
        }
        return ValueTask.FromResult<IReadOnlyList<object?>>(result);
    }
}
