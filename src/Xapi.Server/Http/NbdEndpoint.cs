using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Api;
using Xapi.Server.Hosting;
using Xapi.Server.Sessions;
using Xapi.Storage.DataPath;
using Xapi.Storage.Nbd;
using Xapi.Storage.Service;

namespace Xapi.Server.Http;

/// <summary>
/// The host's NBD server: VDIs for reading, to a client holding a session, under the export name
/// real hosts build (<c>/&lt;vdi-uuid&gt;?session_id=&lt;ref&gt;</c>, as <c>VDI.get_nbd_info</c> gives
/// it). TLS with the host certificate is offered when the host has one (the <c>nbd</c> network
/// purpose); clients of <c>insecure_nbd</c> networks may skip it.
/// </summary>
public sealed class NbdEndpoint(XapiDatabase database, SessionManager sessions, StorageManager storage, ServerOptions options, ILoggerFactory loggers) : IAsyncDisposable
{
    private const string SessionParameter = "session_id";
    private NbdServer? _server;

    /// <summary>The address the server listens on, once started.</summary>
    public IPEndPoint? EndPoint => _server?.LocalEndPoint;

    public X509Certificate2? Certificate { get; private set; }

    /// <summary>Starts serving; a port already taken leaves NBD off (logged) rather than the whole daemon down.</summary>
    public void Start(X509Certificate2? certificate)
    {
        if (options.NbdPort < 0)
        {
            return;
        }
        Certificate = certificate;
        var server = new NbdServer(new NbdServerOptions { Certificate = certificate }, ResolveAsync, loggers.CreateLogger<NbdServer>());
        try
        {
            server.Start(new IPEndPoint(IPAddress.Parse(options.ListenAddress), options.NbdPort));
            _server = server;
        }
        catch (System.Net.Sockets.SocketException e)
        {
            loggers.CreateLogger<NbdEndpoint>().LogError("NBD is off: port {Port} cannot be bound ({Error})", options.NbdPort, e.Message);
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    public static string ExportName(string vdiUuid, SessionRef session) => $"/{vdiUuid}?{SessionParameter}={session.Value}";

    private async ValueTask<IDiskImage?> ResolveAsync(string exportName, CancellationToken cancellationToken)
    {
        var query = exportName.IndexOf('?', StringComparison.Ordinal);
        if (!exportName.StartsWith('/') || query < 0)
        {
            return null;
        }
        var uuid = exportName[1..query];
        var parameters = System.Web.HttpUtility.ParseQueryString(exportName[(query + 1)..]);
        try
        {
            sessions.Validate(parameters[SessionParameter]);
        }
        catch (XenApiException)
        {
            throw new UnauthorizedAccessException("the export name carries no valid session");
        }
        var snapshot = database.Snapshot;
        if (!snapshot.TryGetByUuid(VDIRef.Class, uuid, out var row))
        {
            return null;
        }
        var vdi = snapshot.Get(new VDIRef(row.Ref));
        if (vdi.Type == VdiType.CbtMetadata)
        {
            return null;
        }
        var context = storage.PluggedContext(snapshot, vdi.SR);
        return await storage.DriverOf(snapshot.Get(vdi.SR)).OpenAsync(context, StorageRecords.InfoOf(vdi), writable: false, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync().ConfigureAwait(false);
        }
    }
}
