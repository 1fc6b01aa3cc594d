namespace Xapi.Cli.ThinCli;

/// <summary>
/// One message of the thin-CLI protocol that real <c>xe</c> speaks on <c>POST /cli</c>: the
/// server sends commands, the client answers with responses, and files travel as blobs.
/// </summary>
public abstract record CliMessage;

/// <summary>A line for the client's standard output.</summary>
public sealed record CliPrint(string Text) : CliMessage;

/// <summary>Text for the client's standard error, written as is (no newline added).</summary>
public sealed record CliPrintStderr(string Text) : CliMessage;

/// <summary>A message the client shows only with <c>--debug</c>.</summary>
public sealed record CliDebug(string Text) : CliMessage;

/// <summary>Asks the client to send a local file as blobs.</summary>
public sealed record CliLoad(string FileName) : CliMessage;

/// <summary>Asks the client to download a URL into a local file (standard output when the name is empty).</summary>
public sealed record CliHttpGet(string FileName, string Url) : CliMessage;

/// <summary>Asks the client to upload a local file to a URL.</summary>
public sealed record CliHttpPut(string FileName, string Url) : CliMessage;

/// <summary>Asks the client to relay its terminal to a URL (consoles).</summary>
public sealed record CliHttpConnect(string Url) : CliMessage;

/// <summary>Asks the client for a line from its standard input.</summary>
public sealed record CliPrompt : CliMessage;

/// <summary>Ends the exchange: the client exits with this status.</summary>
public sealed record CliExit(int Code) : CliMessage;

/// <summary>A XenAPI error for the client to print as <c>Error code:</c> and <c>Error parameters:</c>.</summary>
public sealed record CliError(string Code, IReadOnlyList<string> Parameters) : CliMessage;

public enum CliResponseKind
{
    Ok = 5,
    Failed = 6,

    /// <summary>A heartbeat while a long transfer runs.</summary>
    Wait = 18,
}

public sealed record CliResponse(CliResponseKind Kind) : CliMessage;

/// <summary>Announces <see cref="Length"/> raw bytes that follow the message unframed.</summary>
public sealed record CliBlobChunk(int Length) : CliMessage;

public sealed record CliBlobEnd : CliMessage;
