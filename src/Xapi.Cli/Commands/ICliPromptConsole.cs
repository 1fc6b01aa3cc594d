namespace Xapi.Cli.Commands;

/// <summary>A console that can ask its user for a line (the thin-CLI Prompt message), as real xe's confirmations do.</summary>
public interface ICliPromptConsole : ICliConsole
{
    /// <summary>The line the user typed, without its newline.</summary>
    ValueTask<string> PromptAsync();
}
