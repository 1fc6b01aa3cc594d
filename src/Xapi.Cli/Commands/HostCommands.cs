namespace Xapi.Cli.Commands;

internal static class HostCommands
{
    public static IEnumerable<CliCommand> All() => [];
}
