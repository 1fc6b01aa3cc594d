namespace Xapi.Cli.Commands;

internal static class StorageCommands
{
    public static IEnumerable<CliCommand> All() => [];
}
