using Xapi.Cli.Client;

namespace Xapi.Cli;

public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var stdout = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = false };
        var stderr = Console.Error;
        try
        {
            var rc = ReadRcFile();
            var options = XeOptions.Parse(args, Environment.GetEnvironmentVariable("XE_EXTRA_ARGS"), rc);
            if (options.ShowVersion)
            {
                await stdout.WriteLineAsync($"ThinCLI protocol: {ThinCli.CliWire.Major}.{ThinCli.CliWire.Minor}");
                return 0;
            }
            if (options.ShowHelp || options.Arguments.Count == 0)
            {
                await stderr.WriteAsync(XeClient.Usage);
                return 0;
            }
            return await new XeClient(options, stdout, stderr).RunAsync(CancellationToken.None);
        }
        catch (XeUsageException e)
        {
            await stderr.WriteLineAsync(e.Message);
            await stderr.WriteAsync(XeClient.Usage);
            return 0;
        }
        catch (XeFatalException e)
        {
            await stdout.FlushAsync();
            await stderr.WriteLineAsync(e.Message);
            return 1;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidDataException or System.Security.Authentication.AuthenticationException)
        {
            await stdout.FlushAsync();
            await stderr.WriteLineAsync($"Error: {e.Message}");
            return 1;
        }
        finally
        {
            await stdout.FlushAsync();
        }
    }

    // ~/.xe: key=value lines giving defaults (server=, port=, username=, password=, nossl=, ...).
    private static string[] ReadRcFile()
    {
        var home = Environment.GetEnvironmentVariable("HOME") ?? "";
        try
        {
            return File.ReadAllLines(Path.Combine(home, ".xe"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}
