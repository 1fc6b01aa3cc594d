using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Xapi.Protocol;

/// <summary>What one PUT or GET of a VDI's bytes gave: the HTTP status, the body, and the task it ran under.</summary>
internal sealed record Transfer(HttpStatusCode Status, byte[] Body, string TaskStatus, IReadOnlyList<string> ErrorInfo)
{
    public bool Succeeded => Status == HttpStatusCode.OK && TaskStatus == "success";

    public override string ToString() => $"HTTP {(int)Status} task={TaskStatus} {string.Join(" ", ErrorInfo)}".TrimEnd();
}

/// <summary>
/// The scenario's side of the wire: XenAPI calls with the project's own client (XML-RPC, as xe
/// speaks it) and the disk data path over plain HTTP, as backup tools use it.
/// </summary>
internal sealed class Wire(XenApiClient client, HttpClient http)
{
    public XenApiClient Client => client;

    public Task<object?> CallAsync(string method, params object?[] parameters) => client.InvokeAsync(method, parameters);

    public async Task<string> RefAsync(string method, params object?[] parameters) => (string)(await client.InvokeAsync(method, parameters))!;

    public async Task<IReadOnlyList<string>> RefsAsync(string method, params object?[] parameters) =>
        ((IReadOnlyList<object?>)(await client.InvokeAsync(method, parameters))!).Select(r => (string)r!).ToList();

    public async Task<IReadOnlyDictionary<string, object?>> RecordAsync(string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync($"{cls}.get_record", reference))!;

    public static long Long(IReadOnlyDictionary<string, object?> record, string field) => long.Parse((string)record[field]!, CultureInfo.InvariantCulture);

    public static bool Bool(IReadOnlyDictionary<string, object?> record, string field) => (bool)record[field]!;

    public static string Text(IReadOnlyDictionary<string, object?> record, string field) => (string)record[field]!;

    public static IReadOnlyDictionary<string, object?> Map(IReadOnlyDictionary<string, object?> record, string field) => (IReadOnlyDictionary<string, object?>)record[field]!;

    public static IReadOnlyList<string> Refs(IReadOnlyDictionary<string, object?> record, string field) =>
        ((IReadOnlyList<object?>)record[field]!).Select(r => (string)r!).ToList();

    public static string Number(long value) => value.ToString(CultureInfo.InvariantCulture);

    public async Task<string> CreateVdiAsync(string sr, long size, string name) =>
        await RefAsync("VDI.create", new Dictionary<string, object?>
        {
            ["name_label"] = name,
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = Number(size),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = false,
            ["other_config"] = new Dictionary<string, object?>(),
            ["sm_config"] = new Dictionary<string, object?>(),
        });

    private string Query(string vdi, string format) =>
        $"?session_id={Uri.EscapeDataString(client.Session!)}&vdi={Uri.EscapeDataString(vdi)}&format={format}";

    /// <summary>PUT /import_raw_vdi; a refusal comes before the body is read (Expect: 100-continue), so it is never sent.</summary>
    public async Task<Transfer> ImportAsync(string vdi, byte[] body, string format = "raw")
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, "/import_raw_vdi" + Query(vdi, format)) { Content = new ByteArrayContent(body) };
        request.Headers.ExpectContinue = true;
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        return await FinishAsync(response, []);
    }

    public async Task<Transfer> ExportAsync(string vdi, string format = "raw")
    {
        using var response = await http.GetAsync("/export_raw_vdi" + Query(vdi, format));
        var body = await response.Content.ReadAsByteArrayAsync();
        return await FinishAsync(response, body);
    }

    /// <summary>The task the transfer ran under, read once the exchange is over (the server finishes it before it ends the reply).</summary>
    private async Task<Transfer> FinishAsync(HttpResponseMessage response, byte[] body)
    {
        if (!response.Headers.TryGetValues("task-id", out var tasks))
        {
            return new Transfer(response.StatusCode, body, "no task-id header", []);
        }
        var record = await RecordAsync("task", tasks.Single());
        var errorInfo = ((IReadOnlyList<object?>)record["error_info"]!).Select(e => (string)e!).ToList();
        return new Transfer(response.StatusCode, body, Text(record, "status"), errorInfo);
    }

    public async Task<string> ExportSha256Async(string vdi, long? prefix = null)
    {
        var export = await ExportAsync(vdi);
        if (!export.Succeeded)
        {
            return $"export failed: {export}";
        }
        return Sha256(export.Body.AsSpan(0, (int)Math.Min(prefix ?? export.Body.Length, export.Body.Length)));
    }

    public static string Sha256(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(SHA256.HashData(data));
}
