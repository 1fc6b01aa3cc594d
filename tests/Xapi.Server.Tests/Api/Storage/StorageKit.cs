using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Storage.Service;

namespace Xapi.Server.Tests.Api.Storage;

/// <summary>What one PUT or GET of a VDI's bytes gave: the status, the body, and the task it ran under once finished.</summary>
internal sealed record Transfer(HttpStatusCode? Status, byte[] Body, string Task, IReadOnlyDictionary<string, object?> TaskRecord)
{
    public string TaskStatus => (string)TaskRecord["status"]!;

    public IReadOnlyList<string> ErrorInfo => ((IReadOnlyList<object?>)TaskRecord["error_info"]!).Select(e => (string)e!).ToList();
}

/// <summary>
/// A daemon, a logged-in client and an HTTP client for the disk data path, with the steps the
/// storage acceptance tests share: make SRs and VDIs, import and export bytes over HTTP (as
/// xe and backup tools do), follow tasks through events, checksum what came back.
/// </summary>
internal sealed class StorageKit : IAsyncDisposable
{
    public const long MiB = 1L << 20;

    private StorageKit(TestDaemon daemon, XenApiClient client)
    {
        Daemon = daemon;
        Client = client;
        Http = new HttpClient { BaseAddress = daemon.Uri, Timeout = TimeSpan.FromSeconds(60) };
    }

    public TestDaemon Daemon { get; }

    public XenApiClient Client { get; }

    public HttpClient Http { get; }

    public string Session => Client.Session!;

    public static async Task<StorageKit> StartAsync()
    {
        var daemon = await TestDaemon.StartAsync();
        return new StorageKit(daemon, await daemon.LoginAsync());
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        Client.Dispose();
        await Daemon.DisposeAsync();
    }

    public static string Number(long value) => value.ToString(CultureInfo.InvariantCulture);

    public async Task<IReadOnlyDictionary<string, object?>> RecordAsync(string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls}.get_record", reference))!;

    public async Task<long> LongFieldAsync(string cls, string reference, string field) =>
        long.Parse((string)(await RecordAsync(cls, reference))[field]!, CultureInfo.InvariantCulture);

    public async Task<string> DefaultSrAsync()
    {
        var pools = (IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!;
        return (string)(await Client.InvokeAsync("pool.get_default_SR", pools[0]))!;
    }

    public async Task<string> SrOfTypeAsync(string type)
    {
        foreach (var sr in (IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_all"))!)
        {
            if ((string)(await Client.InvokeAsync("SR.get_type", sr))! == type)
            {
                return (string)sr!;
            }
        }
        throw new AssertionException($"no SR of type {type}");
    }

    public async Task<string> HostAsync() => (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;

    public async Task<string> CreateSrAsync(string type, IReadOnlyDictionary<string, object?> deviceConfig, string name = "test SR") =>
        (string)(await Client.InvokeAsync("SR.create", await HostAsync(), deviceConfig, "0", name, "", type, "user", false, new Dictionary<string, object?>()))!;

    /// <summary>The directory an ext SR keeps its images in.</summary>
    public async Task<string> ExtDirectoryAsync(string sr, string? location = null)
    {
        var uuid = (string)(await Client.InvokeAsync("SR.get_uuid", sr))!;
        return Path.Combine(location ?? Path.Combine(Daemon.Host.Options.DataDir, "sr"), uuid);
    }

    public async Task<string> CreateVdiAsync(string sr, long size, string name = "disk", IReadOnlyDictionary<string, object?>? smConfig = null, bool readOnly = false)
    {
        var record = new Dictionary<string, object?>
        {
            ["name_label"] = name,
            ["name_description"] = "",
            ["SR"] = sr,
            ["virtual_size"] = Number(size),
            ["type"] = "user",
            ["sharable"] = false,
            ["read_only"] = readOnly,
            ["other_config"] = new Dictionary<string, object?>(),
            ["sm_config"] = smConfig ?? new Dictionary<string, object?>(),
        };
        return (string)(await Client.InvokeAsync("VDI.create", record))!;
    }

    public async Task<IReadOnlyList<string>> VdisOfAsync(string sr) =>
        ((IReadOnlyList<object?>)(await RecordAsync("SR", sr))["VDIs"]!).Select(v => (string)v!).ToList();

    /// <summary>Scans the SR, lets its collector finish, and returns what the SR then says it uses.</summary>
    public async Task<long> SettledUtilisationAsync(string sr)
    {
        await Client.InvokeAsync("SR.scan", sr);
        await Daemon.Service<StorageManager>().WhenCollectedAsync(new SRRef(sr));
        await Client.InvokeAsync("SR.update", sr);
        return await LongFieldAsync("SR", sr, "physical_utilisation");
    }

    private string Query(string vdi, string format, string? extra) =>
        $"?session_id={Uri.EscapeDataString(Session)}&vdi={Uri.EscapeDataString(vdi)}&format={format}{extra}";

    /// <summary>
    /// PUTs <paramref name="body"/> into the VDI under a task of the client's own, as xe does: once
    /// the server has answered 200 it reports a failure only on the task and may cut the connection
    /// while the body is still being sent (Status is then null).
    /// </summary>
    public async Task<Transfer> ImportAsync(string vdi, byte[] body, string format = "raw", string? extraQuery = null, long? contentLength = null)
    {
        var task = (string)(await Client.InvokeAsync("task.create", "import", ""))!;
        using var request = new HttpRequestMessage(HttpMethod.Put, "/import_raw_vdi" + Query(vdi, format, extraQuery + "&task_id=" + Uri.EscapeDataString(task)));
        request.Content = new ByteArrayContent(body);
        if (contentLength is { } length)
        {
            request.Content.Headers.ContentLength = length;
        }
        // A refusal comes before the body is read: the client then never sends it.
        request.Headers.ExpectContinue = true;
        HttpStatusCode? status = null;
        var answer = Array.Empty<byte>();
        try
        {
            using var response = await Http.SendAsync(request);
            status = response.StatusCode;
            answer = await response.Content.ReadAsByteArrayAsync();
            Assert.That(response.Headers.GetValues("task-id").Single(), Is.EqualTo(task));
        }
        catch (HttpRequestException)
        {
        }
        var record = await Client.WatchTaskAsync(task);
        return new Transfer(status, answer, task, record);
    }

    public async Task<Transfer> ExportAsync(string vdi, string format = "raw", string? baseVdi = null)
    {
        using var response = await Http.GetAsync("/export_raw_vdi" + Query(vdi, format, baseVdi is null ? null : "&base=" + Uri.EscapeDataString(baseVdi)));
        var body = await response.Content.ReadAsByteArrayAsync();
        return await FinishAsync(response, body);
    }

    private async Task<Transfer> FinishAsync(HttpResponseMessage response, byte[] body)
    {
        Assert.That(response.Headers.TryGetValues("task-id", out var tasks), Is.True, $"HTTP {(int)response.StatusCode} without a task-id header");
        var task = tasks!.Single();
        var record = await Client.WatchTaskAsync(task);
        return new Transfer(response.StatusCode, body, task, record);
    }

    public async Task<byte[]> ExportBytesAsync(string vdi, string format = "raw", string? baseVdi = null)
    {
        var export = await ExportAsync(vdi, format, baseVdi);
        Assert.That((export.Status, export.TaskStatus), Is.EqualTo((HttpStatusCode.OK, "success")), string.Join(" ", export.ErrorInfo));
        return export.Body;
    }

    public async Task ImportOkAsync(string vdi, byte[] body, string format = "raw")
    {
        var import = await ImportAsync(vdi, body, format);
        Assert.That((import.Status, import.TaskStatus), Is.EqualTo(((HttpStatusCode?)HttpStatusCode.OK, "success")), string.Join(" ", import.ErrorInfo));
    }

    public static string Sha256(ReadOnlySpan<byte> data) => Convert.ToHexString(SHA256.HashData(data));

    /// <summary>
    /// A disk image of <paramref name="size"/> bytes that is zero except at <paramref name="extents"/>,
    /// which hold bytes from a seeded generator: holes and data at odd, unaligned places.
    /// </summary>
    public static byte[] Pattern(long size, int seed, params (long Offset, int Length)[] extents)
    {
        var data = new byte[size];
        var random = new Random(seed);
        foreach (var (offset, length) in extents)
        {
            random.NextBytes(data.AsSpan((int)offset, length));
        }
        return data;
    }

    /// <summary><paramref name="under"/> with <paramref name="over"/>'s data extents laid on top.</summary>
    public static byte[] Overlay(byte[] under, byte[] over, params (long Offset, int Length)[] extents)
    {
        var result = under.ToArray();
        foreach (var (offset, length) in extents)
        {
            over.AsSpan((int)offset, length).CopyTo(result.AsSpan((int)offset));
        }
        return result;
    }

    /// <summary>Turns a VHD into raw bytes with qemu-img's own reader, an implementation independent of ours.</summary>
    public static async Task<byte[]> QemuVhdToRawAsync(byte[] vhd)
    {
        var directory = Directory.CreateTempSubdirectory("xapi-vhd-").FullName;
        try
        {
            var input = Path.Combine(directory, "in.vhd");
            var output = Path.Combine(directory, "out.raw");
            await File.WriteAllBytesAsync(input, vhd);
            await LocalSrTests.RunAsync("qemu-img", "convert", "-f", "vpc", "-O", "raw", input, output);
            return await File.ReadAllBytesAsync(output);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Every file under a directory with its length and checksum, to prove a refusal changed nothing.</summary>
    public static Dictionary<string, string> Fingerprint(string directory) =>
        Directory.EnumerateFiles(directory, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Where(f => new FileInfo(f).LinkTarget is null)
            .ToDictionary(f => Path.GetRelativePath(directory, f), f => Sha256(File.ReadAllBytes(f)), StringComparer.Ordinal);
}
