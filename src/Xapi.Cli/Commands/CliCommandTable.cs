using System.Collections.Frozen;
using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// Every <c>xe</c> command. The server's <c>/cli</c> endpoint runs commands from this table, so
/// this project's <c>xe</c> and a real host's <c>xe</c> get the same answers.
/// </summary>
public sealed class CliCommandTable
{
    public CliCommandTable(IEnumerable<CliCommand> commands)
    {
        Commands = commands.ToFrozenDictionary(c => c.Name, StringComparer.Ordinal);
    }

    /// <summary>The table this daemon serves.</summary>
    public static CliCommandTable Standard { get; } = new(
        HelpCommands.All()
            .Concat(ParamCommands.All())
            .Concat(VmCommands.All())
            .Concat(StorageCommands.All())
            .Concat(HostCommands.All()));

    public FrozenDictionary<string, CliCommand> Commands { get; }

    /// <summary>
    /// Runs one command line and returns the exit status. Every outcome reaches the client as
    /// printed text or an error; nothing escapes but cancellation.
    /// </summary>
    /// <param name="login">Opens the session, for commands that need one; throws <see cref="XenApiException"/> on bad credentials.</param>
    public async ValueTask<int> ExecuteAsync(CliArgs args, Func<ValueTask<ICliApi>> login, ICliConsole console, CancellationToken cancellation)
    {
        try
        {
            if (!Commands.TryGetValue(args.Command, out var command))
            {
                throw new CliFailure(args.Command.Length == 0 ? "No command given." : $"Unknown command: {args.Command}\nFor usage run: 'xe help'");
            }
            foreach (var required in command.Required)
            {
                if (!args.Has(required))
                {
                    throw new CliFailure($"Required parameter not found: {required}");
                }
            }
            var api = command.NeedsSession ? await login().ConfigureAwait(false) : NoSession.Instance;
            await command.RunAsync(new CliRun(args, api, console, this, cancellation)).ConfigureAwait(false);
            return 0;
        }
        catch (XenApiException e)
        {
            await PrintErrorAsync(console, e.Code, e.Parameters).ConfigureAwait(false);
            return 1;
        }
        catch (CliErrorFailure e)
        {
            await PrintErrorAsync(console, e.Code, e.Parameters).ConfigureAwait(false);
            return 1;
        }
        catch (CliFailure e)
        {
            await console.PrintStderrAsync(e.Message + "\n").ConfigureAwait(false);
            return 1;
        }
    }

    /// <summary>How a XenAPI failure reaches a client that has no Error message (this table's own console is the thin-CLI one).</summary>
    private static ValueTask PrintErrorAsync(ICliConsole console, string code, IReadOnlyList<string> parameters) =>
        console is ICliErrorConsole errors ? errors.ErrorAsync(code, parameters)
            : console.PrintStderrAsync($"Error code: {code}\nError parameters: {string.Join(", ", parameters)}\n");

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
