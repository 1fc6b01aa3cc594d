namespace Xapi.Cli.Commands;

/// <summary>
/// The XenAPI as a command calls it. On the server the calls go straight to the dispatcher with
/// the command's session; results are the API's values (strings, longs, bools, doubles,
/// DateTimes, lists, and string-keyed maps and records).
/// </summary>
public interface ICliApi
{
    /// <summary>The session the command runs in, passed first to every call by <see cref="CallAsync"/>.</summary>
    string Session { get; }

    /// <summary>Calls a message that takes the session, e.g. <c>VM.start</c>; failures throw <see cref="Xapi.Model.XenApiException"/>.</summary>
    ValueTask<object?> CallAsync(string method, params object?[] args);

    /// <summary>
    /// The base URL (scheme, host and port) through which the client reaches this server for
    /// HTTP transfers, as the client addressed it.
    /// </summary>
    Uri ClientFacingBase { get; }
}

/// <summary>The client at the other end: its terminal and its files.</summary>
public interface ICliConsole
{
    ValueTask PrintAsync(string line);

    ValueTask PrintStderrAsync(string text);

    /// <summary>Asks the client to upload a local file with PUT to the URL; true when the client reports success.</summary>
    ValueTask<bool> HttpPutAsync(string fileName, string url);

    /// <summary>Asks the client to download the URL into a local file (empty: standard output); true on success.</summary>
    ValueTask<bool> HttpGetAsync(string fileName, string url);
}
