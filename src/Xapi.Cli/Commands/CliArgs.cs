namespace Xapi.Cli.Commands;

/// <summary>
/// A command line as the server receives it: the command name, then parameters in order, as
/// the real server tokenises them: <c>--flag</c> is the parameter <c>flag=true</c>, a word
/// starting with <c>-</c> is a two-word switch (<c>-u root</c>), anything else splits on its
/// first <c>=</c> (a word without one is a parameter with an empty value). Duplicates are kept
/// and the first one wins on lookup, as real xe's association lists do.
/// </summary>
public sealed class CliArgs
{
    // Real xe's two-word switches; the client strips most of them before sending.
    private static readonly Dictionary<string, string> Switches = new(StringComparer.Ordinal)
    {
        ["-u"] = CliParams.Username,
        ["-pw"] = CliParams.Password,
        ["-s"] = "server",
        ["-h"] = "server",
        ["-p"] = "port",
    };

    // Every parameter including --flags (as name=true), in command-line order.
    private readonly List<KeyValuePair<string, string>> _all;

    private CliArgs(string command, List<KeyValuePair<string, string>> all, bool syntaxError)
    {
        Command = command;
        _all = all;
        SyntaxError = syntaxError;
        Params = all.Where(p => !p.Key.StartsWith(FlagMarker, StringComparison.Ordinal)).ToList();
        Flags = all.Where(p => p.Key.StartsWith(FlagMarker, StringComparison.Ordinal)).Select(p => p.Key[FlagMarker.Length..]).Distinct().ToList();
    }

    // Flags are stored under a marked key so that Params (what commands treat as filters and
    // assignments) keeps to key=value words; lookups see through the mark.
    private const string FlagMarker = "\0--";

    /// <summary>The command name; empty when the line held none.</summary>
    public string Command { get; }

    /// <summary>Whether the line broke real xe's syntax (a switch without a value, an unknown <c>-x</c> switch, a command name with <c>=</c>): it answers <c>Syntax error: </c>.</summary>
    public bool SyntaxError { get; }

    /// <summary>The <c>key=value</c> parameters in order, without <c>--flag</c>s.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Params { get; }

    /// <summary>The names of the <c>--flag</c>s given.</summary>
    public IReadOnlyCollection<string> Flags { get; }

    /// <summary>Every parameter in order, <c>--flag</c> as <c>flag=true</c>: what real xe's commands see.</summary>
    public IEnumerable<KeyValuePair<string, string>> All =>
        _all.Select(p => p.Key.StartsWith(FlagMarker, StringComparison.Ordinal) ? new KeyValuePair<string, string>(p.Key[FlagMarker.Length..], p.Value) : p);

    /// <summary>Tokenises argv (without argv0): the first word is the command.</summary>
    public static CliArgs Parse(IEnumerable<string> argv)
    {
        var words = argv.ToList();
        var all = new List<KeyValuePair<string, string>>();
        if (words.Count == 0)
        {
            return new CliArgs("", all, syntaxError: true);
        }
        var command = words[0];
        var syntaxError = command.Contains('=', StringComparison.Ordinal);
        for (var i = 1; i < words.Count && !syntaxError; i++)
        {
            var word = words[i];
            if (word.StartsWith("--", StringComparison.Ordinal))
            {
                all.Add(new(FlagMarker + word[2..], "true"));
            }
            else if (word.StartsWith('-'))
            {
                if (i + 1 >= words.Count || !Switches.TryGetValue(word, out var name))
                {
                    syntaxError = true;
                    break;
                }
                all.Add(new(name, words[++i]));
            }
            else
            {
                var equals = word.IndexOf('=', StringComparison.Ordinal);
                all.Add(equals < 0 ? new(word, "") : new(word[..equals], word[(equals + 1)..]));
            }
        }
        return new CliArgs(command, all, syntaxError);
    }

    public bool Has(string name) => Find(name) is not null;

    /// <summary>Whether a flag is on: <c>--name</c>, or <c>name=</c> a true value (true, t, yes, y, 1).</summary>
    public bool HasFlag(string flag) => Find(flag) is { } value && IsTrue(value);

    /// <summary>The first value given for a parameter (or <c>"true"</c> for a <c>--flag</c>): real xe lets the first one win.</summary>
    public string? Get(string name) => Find(name);

    /// <summary>The real server's boolean words, case-insensitive.</summary>
    public static bool IsTrue(string value) => value.ToLowerInvariant() is "true" or "t" or "yes" or "y" or "1";

    private string? Find(string name)
    {
        foreach (var (key, value) in _all)
        {
            if (key == name || (key.StartsWith(FlagMarker, StringComparison.Ordinal) && key.AsSpan(FlagMarker.Length).SequenceEqual(name)))
            {
                return value;
            }
        }
        return null;
    }

    /// <summary>The parameters without the credentials the client appends.</summary>
    public CliArgs WithoutCredentials(out string? user, out string? password)
    {
        user = Get(CliParams.Username);
        password = Get(CliParams.Password);
        var rest = _all.Where(p => p.Key is not (CliParams.Username or CliParams.Password)).ToList();
        return new CliArgs(Command, rest, SyntaxError);
    }
}

/// <summary>Parameter and flag names the framework itself reads.</summary>
public static class CliParams
{
    public const string Username = "username";
    public const string Password = "password";
    public const string Minimal = "minimal";
    public const string Multiple = "multiple";
    public const string Force = "force";
    public const string All = "all";
    public const string Params = "params";
    public const string Uuid = "uuid";

    /// <summary>Real xe's <c>stdparams</c>: never filters or assignments.</summary>
    public static readonly IReadOnlySet<string> Standard = new HashSet<string>(StringComparer.Ordinal)
    {
        "server", Password, "port", Username, Minimal, Force, Multiple, All, "message-priority", "trace",
    };
}
