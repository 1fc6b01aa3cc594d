namespace Xapi.Cli.Commands;

/// <summary>
/// A command line as the server receives it: the command name, then <c>key=value</c>
/// parameters (a key may name a map entry as <c>field:key</c>) and <c>--flag</c>s, in order.
/// </summary>
public sealed class CliArgs
{
    private readonly List<KeyValuePair<string, string>> _params;
    private readonly HashSet<string> _flags;

    private CliArgs(string command, List<KeyValuePair<string, string>> parameters, HashSet<string> flags)
    {
        Command = command;
        _params = parameters;
        _flags = flags;
    }

    /// <summary>The command name; empty when the line held none.</summary>
    public string Command { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Params => _params;

    public IReadOnlyCollection<string> Flags => _flags;

    /// <summary>Splits argv; words that are neither <c>key=value</c> nor <c>--flag</c> are kept as a parameter with an empty value under their own name.</summary>
    public static CliArgs Parse(IEnumerable<string> argv)
    {
        string? command = null;
        var parameters = new List<KeyValuePair<string, string>>();
        var flags = new HashSet<string>(StringComparer.Ordinal);
        foreach (var word in argv)
        {
            if (word.Length == 0)
            {
                continue;
            }
            if (word.StartsWith("--", StringComparison.Ordinal) && !word.Contains('=', StringComparison.Ordinal))
            {
                flags.Add(word[2..]);
                continue;
            }
            if (command is null && !word.Contains('=', StringComparison.Ordinal))
            {
                command = word;
                continue;
            }
            var equals = word.IndexOf('=', StringComparison.Ordinal);
            parameters.Add(equals < 0
                ? new KeyValuePair<string, string>(word, "")
                : new KeyValuePair<string, string>(word[..equals], word[(equals + 1)..]));
        }
        return new CliArgs(command ?? "", parameters, flags);
    }

    public bool Has(string name) => _params.Exists(p => p.Key == name);

    public bool HasFlag(string flag) => _flags.Contains(flag);

    /// <summary>The last value given for a parameter (real xe lets a later one win).</summary>
    public string? Get(string name)
    {
        for (var i = _params.Count - 1; i >= 0; i--)
        {
            if (_params[i].Key == name)
            {
                return _params[i].Value;
            }
        }
        return null;
    }

    /// <summary>The parameters without the credentials the client appends.</summary>
    public CliArgs WithoutCredentials(out string? user, out string? password)
    {
        user = Get(CliParams.Username);
        password = Get(CliParams.Password);
        var rest = _params.Where(p => p.Key is not (CliParams.Username or CliParams.Password)).ToList();
        return new CliArgs(Command, rest, _flags);
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
}
