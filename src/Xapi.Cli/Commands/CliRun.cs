namespace Xapi.Cli.Commands;

/// <summary>One running command: its parameters, the API and the client's console.</summary>
public sealed class CliRun(CliArgs args, ICliApi api, ICliConsole console, CliCommandTable table, CancellationToken cancellation)
{
    public CliArgs Args { get; } = args;

    public ICliApi Api { get; } = api;

    public ICliConsole Console { get; } = console;

    /// <summary>The table the command runs from (help reads it).</summary>
    public CliCommandTable Table { get; } = table;

    public CancellationToken Cancellation { get; } = cancellation;

    public bool Minimal => Args.HasFlag(CliParams.Minimal);

    public bool Force => Args.HasFlag(CliParams.Force);

    public bool Multiple => Args.HasFlag(CliParams.Multiple);

    /// <summary>A required parameter: the table has checked it is present.</summary>
    public string Required(string name) => Args.Get(name) ?? throw new CliFailure($"Required parameter not found: {name}");

    public string? Optional(string name) => Args.Get(name);

    public ValueTask PrintAsync(string line) => Console.PrintAsync(line);

    public ValueTask<object?> CallAsync(string method, params object?[] args) => Api.CallAsync(method, args);
}
