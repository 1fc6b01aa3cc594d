using System.Collections.Frozen;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// Every <c>xe</c> command. The server's <c>/cli</c> endpoint runs commands from this table, so
/// this project's <c>xe</c> and a real host's <c>xe</c> get the same answers.
/// </summary>
public sealed class CliCommandTable
{
    /// <summary>The hint real xe prints after a usage error.</summary>
    public const string UsageHint = "For usage run: 'xe help'\n";

    public CliCommandTable(IEnumerable<CliCommand> commands)
    {
        // A later definition of a name replaces an earlier one: hand-written commands come after
        // the generated ones, as in real xe where they never collide.
        var byName = new Dictionary<string, CliCommand>(StringComparer.Ordinal);
        foreach (var command in commands)
        {
            byName[command.Name] = command;
        }
        Commands = byName.ToFrozenDictionary(StringComparer.Ordinal);
    }

    /// <summary>The table this daemon serves.</summary>
    public static CliCommandTable Standard { get; } = new(
        HelpCommands.All()
            .Concat(ParamCommands.All())
            .Concat(VmCommands.All())
            .Concat(StorageCommands.All()));

    public FrozenDictionary<string, CliCommand> Commands { get; }

    /// <summary>
    /// Runs one command line and returns the exit status. Every outcome reaches the client as
    /// printed text or an error, in the real server's words and order: syntax, unknown command
    /// and missing required parameters are answered before logging in; with <c>--minimal</c>
    /// everything printed becomes one comma-separated line at the end.
    /// </summary>
    /// <param name="login">Opens the session, for commands that need one; throws <see cref="XenApiException"/> on bad credentials.</param>
    public async ValueTask<int> ExecuteAsync(CliArgs args, Func<ValueTask<ICliApi>> login, ICliConsole console, CancellationToken cancellation)
    {
        ICliApi? api = null;
        var minimal = args.HasFlag(CliParams.Minimal) ? new CliMinimalConsole(console) : null;
        try
        {
            if (args.SyntaxError)
            {
                await UsageErrorAsync(console, "Syntax error: ").ConfigureAwait(false);
                return 1;
            }
            if (args.Command == HelpCommands.Name)
            {
                // Real xe answers help before looking at the table or the credentials.
                await HelpCommands.RunAsync(new CliRun(args, NoSession.Instance, (ICliConsole?)minimal ?? console, this, cancellation)).ConfigureAwait(false);
                if (minimal is not null)
                {
                    await minimal.FlushAsync().ConfigureAwait(false);
                }
                return 0;
            }
            if (!Commands.TryGetValue(args.Command, out var command))
            {
                await UsageErrorAsync(console, $"Unknown command: {args.Command}").ConfigureAwait(false);
                return 1;
            }
            foreach (var required in command.Required)
            {
                if (!args.Has(required))
                {
                    await UsageErrorAsync(console, $"Required parameter not found: {required}").ConfigureAwait(false);
                    return 1;
                }
            }
            if (command.NeedsSession)
            {
                try
                {
                    api = await login().ConfigureAwait(false);
                }
                catch (XenApiException e) when (e.Code == ErrorCodes.SessionAuthenticationFailed)
                {
                    // The real server names no code here; the user echoed back tells the two cases apart.
                    var user = e.Parameters.Count > 0 ? e.Parameters[0] : "";
                    await UsageErrorAsync(console, user.Length == 0 ? "Username/password must be specified" : "Authentication failed").ConfigureAwait(false);
                    return 1;
                }
            }
            await command.RunAsync(new CliRun(args, api ?? NoSession.Instance, (ICliConsole?)minimal ?? console, this, cancellation)).ConfigureAwait(false);
            if (minimal is not null)
            {
                await minimal.FlushAsync().ConfigureAwait(false);
            }
            return 0;
        }
        catch (XenApiException e)
        {
            await PrintServerErrorAsync(console, api, e.Code, e.Parameters).ConfigureAwait(false);
            return 1;
        }
        catch (CliErrorFailure e)
        {
            await PrintServerErrorAsync(console, api, e.Code, e.Parameters).ConfigureAwait(false);
            return 1;
        }
        catch (CliExitWithStatus e)
        {
            return e.Status;
        }
        catch (CliFailure e)
        {
            await console.PrintStderrAsync(e.Message.EndsWith('\n') ? e.Message : e.Message + "\n").ConfigureAwait(false);
            return 1;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // What real xe does with an exception it has no case for: INTERNAL_ERROR's printout.
            await PrintServerErrorAsync(console, api, ErrorCodes.InternalError, [$"{e.GetType().Name}: {e.Message}"]).ConfigureAwait(false);
            return 1;
        }
    }

    private static async ValueTask UsageErrorAsync(ICliConsole console, string message)
    {
        await console.PrintStderrAsync(message + "\n").ConfigureAwait(false);
        await console.PrintStderrAsync(UsageHint).ConfigureAwait(false);
    }

    /// <summary>
    /// A XenAPI error as real xe prints it: for a code of the datamodel, its description and one
    /// <c>name: value</c> line per parameter (references shown as <c>uuid (name)</c>); for any
    /// other code, the Error message (<c>Error code:</c>, <c>Error parameters:</c>).
    /// </summary>
    public static async ValueTask PrintServerErrorAsync(ICliConsole console, ICliApi? api, string code, IReadOnlyList<string> parameters)
    {
        var shown = new List<string>(parameters.Count);
        foreach (var parameter in parameters)
        {
            shown.Add(api is null ? parameter : await CliRecords.RefConvertAsync(api, parameter).ConfigureAwait(false));
        }
        if (DatamodelError(code) is { } meta)
        {
            await console.PrintStderrAsync(meta.Description + "\n").ConfigureAwait(false);
            foreach (var line in ErrorLines(meta.Params ?? [], shown))
            {
                await console.PrintStderrAsync(line + "\n").ConfigureAwait(false);
            }
            return;
        }
        await (console is ICliErrorConsole errors ? errors.ErrorAsync(code, shown)
            : console.PrintStderrAsync($"Error code: {code}\nError parameters: {string.Join(", ", shown)}\n")).ConfigureAwait(false);
    }

    /// <summary>
    /// The datamodel's description of an error, which real xe prints instead of the code. Codes
    /// declared only in the server's code (no parameter list in the datamodel, CLIENT_ERROR
    /// among them) have none: real xe sends those as the Error message.
    /// </summary>
    internal static ErrorMeta? DatamodelError(string code) =>
        ApiSchema.ErrorsByCode.TryGetValue(code, out var meta) && meta.Params is not null && meta.Description.Length > 0 ? meta : null;

    // Names and values paired; the datamodel and the thrown error need not agree in length.
    internal static IEnumerable<string> ErrorLines(IReadOnlyList<string> names, IReadOnlyList<string> values)
    {
        for (var i = 0; i < Math.Max(names.Count, values.Count); i++)
        {
            yield return i >= names.Count ? $"<extra>: {values[i]}"
                : i >= values.Count ? $"{names[i]}: <unknown>"
                : $"{names[i]}: {values[i]}";
        }
    }

    private sealed class NoSession : ICliApi
    {
        public static readonly NoSession Instance = new();

        public string Session => XType.NullRef;

        public Uri ClientFacingBase => new("http://localhost/");

        public ValueTask<object?> CallAsync(string method, params object?[] args) =>
            throw new InvalidOperationException($"{method} called by a command declared to need no session");
    }
}

/// <summary>A console that carries XenAPI errors as such (the thin-CLI Error message).</summary>
public interface ICliErrorConsole : ICliConsole
{
    ValueTask ErrorAsync(string code, IReadOnlyList<string> parameters);
}

/// <summary>
/// Real xe's <c>--minimal</c> printer: each printed chunk is kept (commas and backslashes
/// escaped), and at the end of a successful command ONE line is printed, the chunks joined by
/// <c>,</c> — in reverse order of printing, as the real printer's list is built. Nothing is
/// printed for a failed command but its error.
/// </summary>
public sealed class CliMinimalConsole(ICliConsole inner) : ICliErrorConsole, ICliPromptConsole
{
    /// <summary>A question is the user's to answer, minimal or not.</summary>
    public ValueTask<string> PromptAsync() => inner is ICliPromptConsole prompts ? prompts.PromptAsync() : ValueTask.FromResult("");

    private readonly List<string> _chunks = [];

    /// <summary>Escapes a value as the minimal printer does: <c>,</c> as <c>\,</c> and <c>\</c> as <c>\\</c>.</summary>
    public static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace(",", "\\,", StringComparison.Ordinal);

    public ValueTask PrintAsync(string line)
    {
        _chunks.Add(Escape(line));
        return ValueTask.CompletedTask;
    }

    /// <summary>Adds a chunk whose values the caller has escaped and joined already (a table's column).</summary>
    public void AddChunk(string escaped) => _chunks.Add(escaped);

    public ValueTask FlushAsync()
    {
        _chunks.Reverse();
        return inner.PrintAsync(string.Join(",", _chunks));
    }

    public ValueTask PrintStderrAsync(string text) => inner.PrintStderrAsync(text);

    public ValueTask ErrorAsync(string code, IReadOnlyList<string> parameters) =>
        inner is ICliErrorConsole errors ? errors.ErrorAsync(code, parameters)
            : inner.PrintStderrAsync($"Error code: {code}\nError parameters: {string.Join(", ", parameters)}\n");

    public ValueTask<bool> HttpPutAsync(string fileName, string url) => inner.HttpPutAsync(fileName, url);

    public ValueTask<bool> HttpGetAsync(string fileName, string url) => inner.HttpGetAsync(fileName, url);
}
