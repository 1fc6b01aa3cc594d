using Xapi.Database.Persistence;
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

// A start that cannot go on says so in one line (what, where, what to do) and exits non-zero;
// a stack trace would bury the one thing the operator needs to read.
XapiHost host;
try
{
    host = XapiHost.Create(options);
}
catch (Exception e) when (e is StartupException or DatabaseFormatException)
{
    Console.Error.WriteLine($"xapi-dotnet: {e.Message}");
    return 1;
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"xapi-dotnet: cannot start: {e.Message}");
    return 1;
}
await using var running = host;
try
{
    await host.StartAsync();
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException or StartupException)
{
    // Typically the port or socket is taken.
    Console.Error.WriteLine($"xapi-dotnet: cannot start: {e.Message}");
    return 1;
}
await host.WaitForShutdownAsync();
return 0;
