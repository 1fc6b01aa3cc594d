using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Pool;

namespace Xapi.Server.Operations;

/// <summary>
/// Sends a call on to the pool member it runs on, as the caller sent it, with the pool secret as
/// its cookie: the member runs it as the pool's (no session or operation checks of its own: the
/// master made them), and its writes reach the pool's database through the master before it
/// answers. A member marked dead is HOST_OFFLINE, one that cannot be reached CANNOT_CONTACT_HOST, as on real pools.
/// </summary>
public sealed class Forwarder : IDisposable
{
    /// <summary>
    /// The pool database's point a forwarded call was sent at (<c>EPOCH/GENERATION</c> of the
    /// master's): the member runs it once its copy has reached that point, so it sees what the
    /// master wrote just before (the PBD it is asked to plug, say).
    /// </summary>
    public const string PoolPositionHeader = "X-Xapi-Pool-Position";

    private readonly PoolMembership _membership;
    private readonly HttpClient _http;

    public Forwarder(PoolMembership membership, Database.XapiDatabase database)
    {
        _membership = membership;
        _http = new HttpClient(new SecretCookie(membership, database, new SocketsHttpHandler { UseCookies = false, PooledConnectionIdleTimeout = TimeSpan.FromSeconds(5) }))
        {
            // A forwarded VM operation takes as long as the operation (a clean shutdown waits up to 20 minutes).
            Timeout = Timeout.InfiniteTimeSpan,
        };
    }

    public async Task<object?> ForwardAsync(Database.DbSnapshot snapshot, HostRef host, MessageMeta message, IReadOnlyList<object?> parameters,
        CancellationToken cancellationToken)
    {
        var record = snapshot.Get(host);
        // As real masters check before they forward (do_op_on): a member known dead is not tried.
        if (snapshot.TryGet(record.Metrics, out HostMetricsRecord metrics) && !metrics.Live)
        {
            throw XenApiErrors.HostOffline(host.Value);
        }
        var target = _membership.MasterUri(record.Address);
        using var member = new XenApiClient(target, RpcDialect.XmlRpc, _http);
        object? result;
        try
        {
            result = await member.CallAsync(message.WireName, parameters, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or RpcFormatException)
        {
            throw XenApiErrors.CannotContactHost(host.Value);
        }
        return message.Result.Kind == XTypeKind.Void ? null : message.Result.Coerce(result, "result");
    }

    /// <summary>HTTP to other hosts of the pool, carrying the pool secret and this host's position: what host-to-host streams (live migration) use besides forwarded calls.</summary>
    public HttpClient PoolHttp => _http;

    public void Dispose() => _http.Dispose();

    private sealed class SecretCookie(PoolMembership membership, Database.XapiDatabase database, HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Add("Cookie", $"{PoolSecret.CookieName}={membership.Secret.Value}");
            var (epoch, generation) = database.FollowsMaster ? database.MasterPosition : (database.Epoch, database.CommittedGeneration);
            request.Headers.Add(PoolPositionHeader, $"{epoch}/{generation.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
            return base.SendAsync(request, cancellationToken);
        }
    }
}
