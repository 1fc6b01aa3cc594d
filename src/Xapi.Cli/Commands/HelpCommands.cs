namespace Xapi.Cli.Commands;

internal static class HelpCommands
{
    public static IEnumerable<CliCommand> All() => [];
}
