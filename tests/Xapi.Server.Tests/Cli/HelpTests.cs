namespace Xapi.Server.Tests.Cli;

/// <summary>xe help in its four forms, as real xe lays it out; bash completion reads these.</summary>
[TestFixture]
public sealed class HelpTests : XeFixture
{
    [Test]
    public async Task Help_for_a_command_is_one_aligned_record_followed_by_two_empty_lines()
    {
        var output = await XeOkAsync("help", "vm-param-get");

        Assert.That(output, Is.EqualTo(
            "command name            : vm-param-get\n" +
            "        reqd params     : uuid, param-name\n" +
            "        optional params : param-key, database:\n" +
            "        description     : Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key.\n\n\n"));
    }

    [Test]
    public async Task Help_needs_no_valid_credentials()
    {
        var result = await Xe.RunRawAsync(["help", "vm-list", "-s", Daemon.Uri.Host, "-p", Daemon.Uri.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-u", "root", "-pw", "wrong", "--nossl"]);

        Assert.That(result.ExitCode, Is.Zero, result.ToString());
        Assert.That(result.Stdout, Does.StartWith("command name            : vm-list\n"));
    }

    [Test]
    public async Task Help_for_an_unknown_command_says_so_on_stdout_and_exits_0()
    {
        var result = await XeAsync("help", "no-such-command");

        Assert.That((result.ExitCode, result.Stdout, result.Stderr), Is.EqualTo((0, "Unknown command 'no-such-command'\n", "")));
    }

    [Test]
    public async Task Plain_help_prints_the_usage_then_the_standard_commands()
    {
        var output = await XeOkAsync("help");

        Assert.That(output, Does.StartWith("Usage:\n  xe <command>\n    [ -s <server> ]            XenServer host\n"));
        Assert.That(output, Does.Contain("To get help on a specific command:\n  xe help <command>\n\nTo get a full listing of commands:\n  xe help --all\n\nCommon command list\n-------------------\n\n    "));
        var list = output[(output.IndexOf("-------------------\n\n", StringComparison.Ordinal) + 21)..];
        Assert.That(list.Split('\n', StringSplitOptions.RemoveEmptyEntries).All(l => l.StartsWith("    ", StringComparison.Ordinal) && l.Length <= 4 + 74), list);
        Assert.That(list, Does.Contain("vm-list").And.Contains("network-list").And.Contains("sr-list"));
        Assert.That(list, Does.Not.Contain("vm-param-list"));
    }

    [Test]
    public async Task Help_all_lists_host_commands_then_vm_commands_then_the_rest()
    {
        var output = await XeOkAsync("help", "--all");

        Assert.That(output, Does.Contain("  xe help <command>\n\nFull command list\n-----------------\n\n    host-"));
        var body = output[(output.IndexOf("-----------------\n\n", StringComparison.Ordinal) + 19)..];
        var groups = body.Split("\n    \n");
        Assert.That(groups, Has.Length.EqualTo(3), body);
        Assert.That(groups[1].TrimStart(), Does.StartWith("vm-"));
        Assert.That(groups[2], Does.Contain("pool-list").And.Contains("task-list").And.Not.Contains("vm-list,"));
    }

    [Test]
    public async Task Help_minimal_all_is_one_comma_separated_line_of_every_command()
    {
        var output = await XeOkAsync("help", "--minimal", "--all");

        var names = output.TrimEnd('\n').Split(',');
        Assert.That(output.Count(c => c == '\n'), Is.EqualTo(1));
        Assert.That(names, Does.Contain("vm-param-set").And.Contains("host-param-list").And.Contains("message-list"));
        Assert.That(names, Is.Ordered.Using<string>(StringComparer.Ordinal));
    }

    [Test]
    public async Task Help_minimal_lists_only_the_standard_commands()
    {
        var output = await XeOkAsync("help", "--minimal");

        Assert.That(output.TrimEnd('\n').Split(','), Does.Contain("vm-list").And.Not.Contains("vm-param-list"));
    }
}
