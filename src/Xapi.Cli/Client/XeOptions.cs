using System.Globalization;

namespace Xapi.Cli.Client;

/// <summary>
/// Where to connect and as whom, from the command line, <c>XE_EXTRA_ARGS</c> and <c>~/.xe</c>
/// (in that order of precedence, as real xe reads them); everything else goes to the server.
/// </summary>
public sealed class XeOptions
{
    public string Server { get; private set; } = "127.0.0.1";

    public int? Port { get; private set; }

    public string User { get; private set; } = "root";

    public string Password { get; private set; } = "null";

    public string? PasswordFile { get; private set; }

    public bool UseSsl { get; private set; } = true;

    public bool Debug { get; private set; }

    public bool ShowHelp { get; private set; }

    public bool ShowVersion { get; private set; }

    /// <summary>What the server gets: the command and its parameters.</summary>
    public List<string> Arguments { get; } = [];

    public int EffectivePort => Port ?? (UseSsl ? 443 : 80);

    public static XeOptions Parse(IReadOnlyList<string> argv, string? extraArgs, IReadOnlyList<string> rcLines)
    {
        var options = new XeOptions();
        if (argv.Contains("-version"))
        {
            options.ShowVersion = true;
            return options;
        }
        // The rc file gives defaults; the command line, read last, wins.
        var rcRest = new List<string>();
        foreach (var line in rcLines)
        {
            if (line.Length == 0)
            {
                continue;
            }
            var equals = line.IndexOf('=', StringComparison.Ordinal);
            if (equals < 0)
            {
                throw new XeUsageException("Error parsing rc file. No defaults loaded");
            }
            if (!options.SetKeyword(line[..equals], line[(equals + 1)..]))
            {
                rcRest.Add(line);
            }
        }
        var extrasRest = options.ProcessArgs(SplitExtraArgs(extraArgs ?? ""));
        options.ShowHelp = argv.Any(a => a is "-help" or "--help");
        var argsRest = options.ProcessArgs(argv.Where(a => a is not ("-help" or "--help")).ToList());
        options.Arguments.AddRange(argsRest);
        options.Arguments.AddRange(extrasRest);
        options.Arguments.AddRange(rcRest);
        if (options.PasswordFile is { } file)
        {
            options.ReadPasswordFile(file);
        }
        return options;
    }

    // XE_EXTRA_ARGS is comma-separated; a backslash escapes a comma.
    private static List<string> SplitExtraArgs(string extra)
    {
        var result = new List<string>();
        var current = new System.Text.StringBuilder();
        for (var i = 0; i < extra.Length; i++)
        {
            if (extra[i] == '\\' && i + 1 < extra.Length && extra[i + 1] == ',')
            {
                current.Append(',');
                i++;
            }
            else if (extra[i] == ',')
            {
                if (current.Length > 0)
                {
                    result.Add(current.ToString());
                }
                current.Clear();
            }
            else
            {
                current.Append(extra[i]);
            }
        }
        if (current.Length > 0)
        {
            result.Add(current.ToString());
        }
        return result;
    }

    private List<string> ProcessArgs(IReadOnlyList<string> args)
    {
        var rest = new List<string>();
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            var keyword = arg switch
            {
                "-s" or "-h" => "server",
                "-p" => "port",
                "-u" => "username",
                "-pw" => "password",
                "-pwf" => "passwordfile",
                _ => null,
            };
            if (keyword is not null && i + 1 < args.Count)
            {
                SetKeyword(keyword, args[++i]);
                continue;
            }
            switch (arg)
            {
                case "--nossl":
                    UseSsl = false;
                    continue;
                case "--debug":
                    Debug = true;
                    continue;
                case "--debug-on-fail":
                    continue;
            }
            var equals = arg.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0 && SetKeyword(arg[..equals], arg[(equals + 1)..]))
            {
                continue;
            }
            rest.Add(arg);
        }
        return rest;
    }

    private bool SetKeyword(string key, string value)
    {
        switch (key)
        {
            case "server":
                Server = value;
                return true;
            case "port":
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
                {
                    throw new XeUsageException("Port number must be an integer (0-65535)");
                }
                Port = port;
                return true;
            case "username":
                User = value;
                return true;
            case "password":
                Password = value;
                return true;
            case "passwordfile":
                PasswordFile = value;
                return true;
            case "nossl":
                UseSsl = !bool.TryParse(value, out var nossl) || !nossl;
                return true;
            case "debug":
                Debug = bool.TryParse(value, out var debug) && debug;
                return true;
            case "debugonfail":
                return true;
            default:
                return false;
        }
    }

    private void ReadPasswordFile(string file)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new XeFatalException($"Error opening password file '{file}'");
        }
        if (lines.Length < 2)
        {
            throw new XeFatalException("Error: password file format: expecting username on the first line, password on the second line");
        }
        User = lines[0];
        Password = lines[1];
    }
}

/// <summary>Bad options: the usage text follows.</summary>
public sealed class XeUsageException(string message) : Exception(message);

/// <summary>A failure the client reports itself, exit status 1.</summary>
public sealed class XeFatalException(string message) : Exception(message);
