namespace Xapi.Cli.Commands;

internal static class ParamCommands
{
    public static IEnumerable<CliCommand> All() => [];
}
