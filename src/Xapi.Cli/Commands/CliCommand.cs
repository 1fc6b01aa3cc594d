namespace Xapi.Cli.Commands;

/// <summary>One row of the command table: what <c>xe help</c> shows and what runs.</summary>
public sealed record CliCommand(
    string Name,
    string Help,
    IReadOnlyList<string> Required,
    IReadOnlyList<string> Optional,
    Func<CliRun, ValueTask> RunAsync)
{
    /// <summary>Listed by <c>xe help</c> without <c>--all</c>.</summary>
    public bool Standard { get; init; }

    /// <summary>Runs without a session (help, and the few commands real hosts answer unauthenticated).</summary>
    public bool NeedsSession { get; init; } = true;

    /// <summary>Takes object selectors: any field filter of its class besides the named parameters.</summary>
    public bool TakesSelectors { get; init; }
}

/// <summary>A command's failure as real xe reports it: printed by the client, exit status 1.</summary>
public sealed class CliFailure(string message) : Exception(message);

/// <summary>A failure that real xe reports through the Error message: <c>Error code:</c> and <c>Error parameters:</c>.</summary>
public sealed class CliErrorFailure(string code, params string[] parameters) : Exception(code)
{
    public string Code { get; } = code;

    public IReadOnlyList<string> Parameters { get; } = parameters;
}

/// <summary>The command has printed why it failed (real xe's <c>ExitWithError</c>): exit with this status, print nothing more.</summary>
public sealed class CliExitWithStatus(int status) : Exception($"exit {status}")
{
    public int Status { get; } = status;
}
