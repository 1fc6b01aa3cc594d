using System.Buffers;
using System.Net.Http.Headers;
using Xapi.Model;

namespace Xapi.Protocol;

/// <summary>
/// A XenAPI client over HTTP, speaking XML-RPC or JSON-RPC. Failures come back as
/// <see cref="XenApiException"/>; the session is remembered after <see cref="LoginAsync"/>.
/// </summary>
public sealed class XenApiClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private long _nextId;

    public XenApiClient(Uri baseUri, RpcDialect dialect = RpcDialect.XmlRpc, HttpClient? http = null)
    {
        BaseUri = baseUri;
        Dialect = dialect;
        _ownsHttp = http is null;
        _http = http ?? new HttpClient { Timeout = TimeSpan.FromMinutes(10) };
    }

    public Uri BaseUri { get; }

    public RpcDialect Dialect { get; }

    public string? Session { get; private set; }

    public RpcLimits Limits { get; init; } = new(MaxBodyBytes: 256 * 1024 * 1024, MaxDepth: 256);

    public async Task<string> LoginAsync(string user, string password, CancellationToken cancellationToken = default)
    {
        Session = (string)(await CallAsync("session.login_with_password", [user, password, "2.21", "xapi-dotnet"], cancellationToken))!;
        return Session;
    }

    public async Task LogoutAsync(CancellationToken cancellationToken = default)
    {
        if (Session is not null)
        {
            await CallAsync("session.logout", [Session], cancellationToken);
            Session = null;
        }
    }

    /// <summary>Calls a method that takes the session first, passing the remembered session.</summary>
    public Task<object?> InvokeAsync(string method, params object?[] parameters) =>
        CallAsync(method, [Session ?? throw new InvalidOperationException("not logged in"), .. parameters]);

    public async Task<object?> CallAsync(string method, IReadOnlyList<object?> parameters, CancellationToken cancellationToken = default)
    {
        var body = new ArrayBufferWriter<byte>();
        Uri target;
        string contentType;
        if (Dialect == RpcDialect.XmlRpc)
        {
            XmlRpcWriter.WriteCall(body, method, parameters);
            target = BaseUri;
            contentType = "text/xml";
        }
        else
        {
            JsonRpc.WriteCall(body, method, parameters, Interlocked.Increment(ref _nextId), Dialect == RpcDialect.JsonRpcV2);
            target = new Uri(BaseUri, "/jsonrpc");
            contentType = "application/json";
        }
        using var content = new ByteArrayContent(body.WrittenSpan.ToArray());
        content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        using var response = await _http.PostAsync(target, content, cancellationToken).ConfigureAwait(false);
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"HTTP {(int)response.StatusCode}: {System.Text.Encoding.UTF8.GetString(bytes)}", null, response.StatusCode);
        }
        return Dialect == RpcDialect.XmlRpc ? DecodeXmlRpcEnvelope(method, XmlRpcReader.ReadResponse(bytes, Limits)) : JsonRpc.ReadResponse(bytes, Limits);
    }

    private static object? DecodeXmlRpcEnvelope(string method, object? envelope)
    {
        // Servers answer system.listMethods with the bare array, as plain XML-RPC servers do.
        if (method == "system.listMethods" && envelope is IReadOnlyList<object?> bare)
        {
            return bare;
        }
        if (envelope is not IReadOnlyDictionary<string, object?> result || result.GetValueOrDefault("Status") is not string status)
        {
            throw new RpcFormatException("response is not a XenAPI envelope");
        }
        if (status == "Success")
        {
            return result.GetValueOrDefault("Value");
        }
        var description = (result.GetValueOrDefault("ErrorDescription") as IReadOnlyList<object?> ?? [])
            .Select(x => XType.ToDisplayString(x)).ToArray();
        throw description.Length == 0 ? new XenApiException("UNKNOWN_ERROR") : new XenApiException(description[0], description[1..]);
    }

    public void Dispose()
    {
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }
}
