using Xapi.Server.Hosting;

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

XapiHost host;
try
{
    host = XapiHost.Create(options);
}
catch (Xapi.Database.Persistence.DatabaseFormatException e)
{
    Console.Error.WriteLine($"xapi-dotnet: {e.Message}");
    return 1;
}
await using var running = host;
await host.StartAsync();
await host.WaitForShutdownAsync();
return 0;
