using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Xapi.Database.Replication;

namespace Xapi.Server.Pool;

/// <summary>
/// A member's way to the master's database: <see cref="PoolDatabaseEndpoint"/> on the master,
/// with the pool secret as its cookie.
/// </summary>
public sealed class HttpMasterLink : IPoolMasterLink, IDisposable
{
    private static readonly MediaTypeHeaderValue Binary = new("application/octet-stream");
    private readonly HttpClient _http;
    private readonly Uri _master;
    private readonly string _cookie;

    /// <summary>The member's host, named in its requests for changes: the master counts them as the member's heartbeat.</summary>
    public string? MemberHost { get; init; }

    public HttpMasterLink(Uri master, string secret, TimeSpan timeout)
    {
        _master = master;
        _cookie = $"{PoolSecret.CookieName}={secret}";
        _http = new HttpClient(new SocketsHttpHandler { UseCookies = false, PooledConnectionIdleTimeout = TimeSpan.FromSeconds(5) })
        {
            Timeout = timeout,
        };
    }

    /// <summary>The master's base address: http://ADDRESS:PORT/ (an address without a port takes this host's own port, as every host of a pool listens on one).</summary>
    public static Uri MasterUri(string masterAddress, int port)
    {
        if (Uri.TryCreate($"http://{masterAddress}/", UriKind.Absolute, out var given) && !given.IsDefaultPort)
        {
            return given;
        }
        var host = IPAddress.TryParse(masterAddress, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : masterAddress;
        return new Uri($"http://{host}:{port.ToString(CultureInfo.InvariantCulture)}/");
    }

    public Uri Master => _master;

    public ReplicaCommitReply Commit(IReadOnlyList<RowChange> changes, string epoch, long since)
    {
        using var request = Request(HttpMethod.Post, PoolDatabaseEndpoint.CommitPath, epoch, since, null);
        request.Content = new ByteArrayContent(ReplicationCodec.EncodeChanges(changes));
        request.Content.Headers.ContentType = Binary;
        using var response = _http.Send(request);
        return ReplicationCodec.DecodeCommitReply(ReadBody(response));
    }

    public async Task<ReplicaDelta> ChangesAsync(string epoch, long since, TimeSpan wait, CancellationToken cancellationToken)
    {
        using var request = Request(HttpMethod.Get, PoolDatabaseEndpoint.ChangesPath, epoch, since, wait);
        using var response = await _http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await response.Content.LoadIntoBufferAsync(cancellationToken).ConfigureAwait(false);
        return ReplicationCodec.DecodeDelta(ReadBody(response));
    }

    private HttpRequestMessage Request(HttpMethod method, string path, string epoch, long since, TimeSpan? wait)
    {
        var query = $"?{PoolDatabaseEndpoint.EpochParameter}={Uri.EscapeDataString(epoch)}&{PoolDatabaseEndpoint.SinceParameter}={since.ToString(CultureInfo.InvariantCulture)}";
        if (wait is { } w)
        {
            query += $"&{PoolDatabaseEndpoint.WaitParameter}={((long)w.TotalMilliseconds).ToString(CultureInfo.InvariantCulture)}";
        }
        if (MemberHost is { } host)
        {
            query += $"&{PoolDatabaseEndpoint.HostParameter}={Uri.EscapeDataString(host)}";
        }
        var request = new HttpRequestMessage(method, new Uri(_master, path + query));
        request.Headers.Add("Cookie", _cookie);
        return request;
    }

    private static byte[] ReadBody(HttpResponseMessage response)
    {
        using var stream = response.Content.ReadAsStream();
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException(
                $"the pool master answered HTTP {(int)response.StatusCode}: {System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)Math.Min(buffer.Length, 300))}",
                null, response.StatusCode);
        }
        return buffer.ToArray();
    }

    public void Dispose() => _http.Dispose();
}
