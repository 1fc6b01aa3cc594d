using Xapi.Server;

ServerOptions options;
try
{
    options = ServerOptions.Load(args);
}
catch (Exception e) when (e is FileNotFoundException or FormatException or InvalidOperationException)
{
    Console.Error.WriteLine($"xapi-dotnet: {e.Message}");
    return 2;
}

await using var host = XapiHost.Create(options);
await host.StartAsync();
await host.WaitForShutdownAsync();
return 0;
