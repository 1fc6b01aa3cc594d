using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Hosting;

// Usage:
//   dotnet run -c Release --project bench/Xapi.Bench -- rpc [seconds-per-case] [concurrency]
//   dotnet run -c Release --project bench/Xapi.Bench -- events [writes] [journal|memory|postgres]
//   dotnet run -c Release --project bench/Xapi.Bench -- durability [seconds-per-case]
//   dotnet run -c Release --project bench/Xapi.Bench -- storage [runs] [raw-import|raw-export|vhd-import|vhd-export|nbd-export ...]
//   dotnet run -c Release --project bench/Xapi.Bench -- vm [seconds-per-case] [fleet]
//   dotnet run -c Release --project bench/Xapi.Bench -- xe [runs] [vms] [aot|r2r|framework ...]
//   dotnet run -c Release --project bench/Xapi.Bench -- pool [cycles]
//   dotnet run -c Release --project bench/Xapi.Bench -- migrate [migrations] [MiB/s of guest writes ...]
if (args.Length > 0 && args[0] == "events")
{
    await EventLatency.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 10_000, args.Length > 2 ? args[2] : "journal");
    return;
}
if (args.Length > 0 && args[0] == "durability")
{
    await Durability.RunAsync(args.Length > 1 ? double.Parse(args[1], CultureInfo.InvariantCulture) : 5);
    return;
}
if (args.Length > 0 && args[0] == "storage")
{
    await StorageThroughput.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 5, args.Length > 2 ? args[2..] : []);
    return;
}
if (args.Length > 0 && args[0] == "vm")
{
    await VmLifecycle.RunAsync(args.Length > 1 ? double.Parse(args[1], CultureInfo.InvariantCulture) : 10, args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 512);
    return;
}
if (args.Length > 0 && args[0] == "xe")
{
    await XeStartup.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 20, args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 1000, args.Length > 3 ? args[3..] : []);
    return;
}
if (args.Length > 0 && args[0] == "pool")
{
    await PoolForwarding.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 200);
    return;
}
if (args.Length > 0 && args[0] == "migrate")
{
    await PoolMigration.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 10,
        args.Length > 2 ? [.. args[2..].Select(a => long.Parse(a, CultureInfo.InvariantCulture))] : [0, 10, 100, 400]);
    return;
}
if (args.Length > 0 && args[0] == "rpc")
{
    args = args[1..];
}

// Calls per second of real XenAPI calls against a bare Kestrel endpoint that returns a canned
// reply of the same size, both on loopback in this process, so the ratio cancels the machine.
var seconds = args.Length > 0 ? double.Parse(args[0], CultureInfo.InvariantCulture) : 5;
var concurrency = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 16;
const int VmCount = 1000;

await using var bench = await BenchDaemon.StartAsync();
var daemon = bench.Host;
var vmClass = ApiSchema.Class("VM");
var template = daemon.Database.Snapshot.All<VMRecord>().First(vm => vm.IsATemplate);
daemon.Database.Write(tx =>
{
    for (var i = daemon.Database.Snapshot.Count(vmClass); i < VmCount; i++)
    {
        tx.Create(vmClass, new Dictionary<string, object?>
        {
            ["name_label"] = $"bench-vm-{i}",
            ["memory_static_max"] = template.MemoryStaticMax,
            ["VCPUs_max"] = 2L,
            ["other_config"] = ValueMap.FromPairs([new("owner", "bench")]),
        });
    }
});

using var login = new XenApiClient(daemon.HttpUri);
var session = await login.LoginAsync("root", BenchDaemon.Password);
var vm = daemon.Database.Snapshot.All(vmClass).First().Ref;

var cases = new List<(string Name, string Path, string ContentType, byte[] Body)>
{
    ("VM.get_record      XML-RPC ", "/", "text/xml", XmlCall("VM.get_record", session, vm)),
    ("VM.get_record      JSON-RPC", "/jsonrpc", "application/json", JsonCall("VM.get_record", session, vm)),
    ("VM.get_all_records XML-RPC ", "/", "text/xml", XmlCall("VM.get_all_records", session)),
    ("VM.get_all_records JSON-RPC", "/jsonrpc", "application/json", JsonCall("VM.get_all_records", session)),
    // What XenCenter and Xen Orchestra call on connect: every object as an "add" event.
    ("event.from dump    XML-RPC ", "/", "text/xml", XmlCall("event.from", session, new object?[] { "*" }, "", 30.0)),
    ("event.from dump    JSON-RPC", "/jsonrpc", "application/json", JsonCall("event.from", session, new object?[] { "*" }, "", 30.0)),
};

using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = concurrency, PooledConnectionLifetime = Timeout.InfiniteTimeSpan });
var canned = new Dictionary<string, (byte[] Body, string ContentType)>();
foreach (var (name, path, contentType, body) in cases)
{
    var reply = await PostAsync(http, new Uri(daemon.HttpUri, path), contentType, body);
    canned[path + "#" + name] = (reply, contentType);
}

// The baseline: Kestrel, same content type and reply size, no parsing or database.
var bare = WebApplication.CreateSlimBuilder();
bare.Logging.ClearProviders();
bare.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
await using var bareApp = bare.Build();
bareApp.Run(async context =>
{
    var key = context.Request.Path + "#" + context.Request.Query["case"];
    await context.Request.Body.CopyToAsync(Stream.Null);
    var (reply, contentType) = canned[key];
    context.Response.ContentType = contentType;
    context.Response.ContentLength = reply.Length;
    await context.Response.Body.WriteAsync(reply);
});
await bareApp.StartAsync();
var bareUri = new Uri(bareApp.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

// Warm every path first: the JIT tiers code up over the first seconds, and whichever case ran
// first would otherwise pay for it.
foreach (var (name, path, contentType, body) in cases)
{
    await MeasureAsync(http, new Uri(daemon.HttpUri, path), contentType, body, TimeSpan.FromSeconds(2), concurrency);
    await MeasureAsync(http, new Uri(bareUri, path + "?case=" + Uri.EscapeDataString(name)), contentType, body, TimeSpan.FromSeconds(1), concurrency);
}

Console.WriteLine($"loopback, {concurrency} concurrent clients, {seconds:0.#} s per case, {VmCount} VMs, {Environment.ProcessorCount} cores");
Console.WriteLine($"{"case",-30} {"reply",9} {"xapi calls/s",13} {"bare calls/s",13} {"ratio",7}");
foreach (var (name, path, contentType, body) in cases)
{
    var replySize = canned[path + "#" + name].Body.Length;
    await MeasureAsync(http, new Uri(daemon.HttpUri, path), contentType, body, TimeSpan.FromSeconds(1), concurrency);
    var xapi = await MeasureAsync(http, new Uri(daemon.HttpUri, path), contentType, body, TimeSpan.FromSeconds(seconds), concurrency);
    var bareTarget = new Uri(bareUri, path + "?case=" + Uri.EscapeDataString(name));
    await MeasureAsync(http, bareTarget, contentType, body, TimeSpan.FromSeconds(1), concurrency);
    var baseline = await MeasureAsync(http, bareTarget, contentType, body, TimeSpan.FromSeconds(seconds), concurrency);
    Console.WriteLine($"{name,-30} {replySize,9:N0} {xapi,13:N0} {baseline,13:N0} {xapi / baseline,7:0.00}");
}

static byte[] XmlCall(string method, params object?[] parameters)
{
    var buffer = new ArrayBufferWriter<byte>();
    XmlRpcWriter.WriteCall(buffer, method, parameters);
    return buffer.WrittenSpan.ToArray();
}

static byte[] JsonCall(string method, params object?[] parameters)
{
    var buffer = new ArrayBufferWriter<byte>();
    JsonRpc.WriteCall(buffer, method, parameters, 1);
    return buffer.WrittenSpan.ToArray();
}

static async Task<byte[]> PostAsync(HttpClient http, Uri uri, string contentType, byte[] body)
{
    using var content = new ByteArrayContent(body);
    content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
    using var response = await http.PostAsync(uri, content);
    response.EnsureSuccessStatusCode();
    return await response.Content.ReadAsByteArrayAsync();
}

static async Task<double> MeasureAsync(HttpClient http, Uri uri, string contentType, byte[] body, TimeSpan duration, int concurrency)
{
    long calls = 0;
    var watch = Stopwatch.StartNew();
    var workers = Enumerable.Range(0, concurrency).Select(async _ =>
    {
        while (watch.Elapsed < duration)
        {
            await PostAsync(http, uri, contentType, body);
            Interlocked.Increment(ref calls);
        }
    });
    await Task.WhenAll(workers);
    return calls / watch.Elapsed.TotalSeconds;
}
