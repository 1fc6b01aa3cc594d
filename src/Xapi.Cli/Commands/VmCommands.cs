namespace Xapi.Cli.Commands;

internal static class VmCommands
{
    public static IEnumerable<CliCommand> All() => [];
}
