namespace Xapi.Cli.Commands;

/// <summary>
/// <c>xe help</c>, as real xe answers it (cli_frontend.ml <c>rio_help</c>): not a row of the
/// table (so it lists neither itself nor describes itself), run without logging in, always exit 0.
/// </summary>
internal static class HelpCommands
{
    public const string Name = "help";

    private const string VmSelectorsInfo =
        " VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs.";

    private const string HostSelectorsInfo =
        " Hosts can be specified by filtering the full list of hosts on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the host with that uuid, and 'enabled=true' will select only hosts whose 'enabled' field is equal to 'true'. The special pseudo-field 'host' matches any of hostname, name-label or uuid. Where multiple hosts are matching, and the operation can be performed on multiple hosts, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe host-list params=all'. If no parameters to select hosts are given, the operation will be performed on all hosts.";

    private const string SrSelectorsInfo =
        " SRs can be specified by filtering the full list of SRs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the sr with that uuid, and 'enabled=true' will select only srs whose 'enabled' field is equal to 'true'. The special pseudo-field 'sr' matches either of name-label or uuid. Where multiple SRs are matching, and the operation can be performed on multiple SRs, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe sr-list params=all'. If no parameters to select SRs are given, the operation will be performed on all SRs.";

    private const string Usage =
        """
        Usage:
          xe <command>
            [ -s <server> ]            XenServer host
            [ -p <port> ]              XenServer port number
            [ -u <username> -pw <password> | -pwf <password file> ]
                                       User authentication (password or file)
            [ --nossl ]                Disable SSL/TLS
            [ --debug ]                Enable debug output
            [ --debug-on-fail ]        Enable debug output only on failure
            [ --traceparent <value> ]  Distributed tracing context
            [ <other arguments> ... ]  Command-specific options

        To get help on a specific command:
          xe help <command>


        """;

    // Parameters help ignores when looking for commands to describe.
    private static readonly HashSet<string> NotCommands = new(StringComparer.Ordinal)
    {
        "server", CliParams.Username, CliParams.Password, "port", CliParams.Minimal, CliParams.All,
    };

    /// <summary>No table rows: help is answered by <see cref="RunAsync"/> before the table is consulted.</summary>
    public static IEnumerable<CliCommand> All() => [];

    public static async ValueTask RunAsync(CliRun run)
    {
        var named = run.Args.All.Select(a => a.Key).Where(k => !NotCommands.Contains(k)).ToList();
        if (named.Count > 0)
        {
            foreach (var name in named)
            {
                await DescribeAsync(run, name).ConfigureAwait(false);
            }
            return;
        }
        var names = run.Table.Commands.Keys.Order(StringComparer.Ordinal).ToList();
        if (run.Args.Get(CliParams.All) == "true")
        {
            if (run.Console is CliMinimalConsole all)
            {
                all.AddChunk(string.Join(",", names.Select(CliMinimalConsole.Escape)));
                return;
            }
            await run.PrintAsync(Usage + "Full command list\n-----------------\n").ConfigureAwait(false);
            var hosts = names.Where(n => n.StartsWith("host-", StringComparison.Ordinal)).ToList();
            var vms = names.Where(n => n.StartsWith("vm-", StringComparison.Ordinal)).ToList();
            var others = names.Except(hosts).Except(vms).ToList();
            await PrintListAsync(run, hosts).ConfigureAwait(false);
            await PrintListAsync(run, [""]).ConfigureAwait(false);
            await PrintListAsync(run, vms).ConfigureAwait(false);
            await PrintListAsync(run, [""]).ConfigureAwait(false);
            await PrintListAsync(run, others).ConfigureAwait(false);
            return;
        }
        var standard = names.Where(n => run.Table.Commands[n].Standard).ToList();
        if (run.Console is CliMinimalConsole minimal)
        {
            minimal.AddChunk(string.Join(",", standard.Select(CliMinimalConsole.Escape)));
            return;
        }
        await run.PrintAsync(Usage + "To get a full listing of commands:\n  xe help --all\n\nCommon command list\n-------------------\n").ConfigureAwait(false);
        await PrintListAsync(run, standard).ConfigureAwait(false);
    }

    private static async ValueTask DescribeAsync(CliRun run, string name)
    {
        if (!run.Table.Commands.TryGetValue(name, out var command))
        {
            await run.PrintAsync($"Unknown command '{name}'").ConfigureAwait(false);
            return;
        }
        var optional = command.Optional.ToList();
        var description = command.Help;
        if (command.TakesSelectors)
        {
            var (selector, info) = SelectorsOf(command.Name);
            optional.Add(selector);
            description += info;
        }
        await CliRecords.PrintRowsAsync(run,
        [
            [
                ("command name        ", command.Name),
                ("reqd params     ", string.Join(", ", command.Required)),
                ("optional params ", string.Join(", ", optional)),
                ("description     ", description),
            ],
        ]).ConfigureAwait(false);
    }

    // Which selectors a command takes, from its name (host-…, sr-…, else VMs).
    private static (string Selector, string Info) SelectorsOf(string command) =>
        command.StartsWith("host-", StringComparison.Ordinal) ? ("<host-selectors>", HostSelectorsInfo)
        : command.StartsWith("sr-", StringComparison.Ordinal) ? ("<sr-selectors>", SrSelectorsInfo)
        : ("<vm-selectors>", VmSelectorsInfo);

    /// <summary>Real xe's <c>make_list</c>: four-space indent, ", " between names, a new line once a line would pass 74 characters.</summary>
    public static IReadOnlyList<string> MakeList(IReadOnlyList<string> names)
    {
        const string indent = "    ";
        var lines = new List<string>();
        if (names.Count == 0)
        {
            return lines;
        }
        var current = indent + names[0];
        foreach (var name in names.Skip(1))
        {
            if (current.Length + name.Length > 74)
            {
                lines.Add(current);
                current = indent + name;
            }
            else
            {
                current += ", " + name;
            }
        }
        lines.Add(current);
        return lines;
    }

    private static async ValueTask PrintListAsync(CliRun run, IReadOnlyList<string> names)
    {
        foreach (var line in MakeList(names))
        {
            await run.PrintAsync(line).ConfigureAwait(false);
        }
    }
}
