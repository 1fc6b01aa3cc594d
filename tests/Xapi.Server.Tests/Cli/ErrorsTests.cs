using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>How xe reports what went wrong: the real server's words, streams and exit status.</summary>
[TestFixture]
public sealed class ErrorsTests : XeFixture
{
    private const string Usage = "For usage run: 'xe help'\n";

    private Task<XeResult> XeAsUserAsync(string user, string password, params string[] args) =>
        Xe.RunRawAsync([.. args, "-s", Daemon.Uri.Host, "-p", Daemon.Uri.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-u", user, "-pw", password, "--nossl"]);

    [Test]
    public async Task An_unknown_command_is_named_on_stderr_with_the_usage_hint_and_exits_1()
    {
        var result = await XeAsync("no-such-command");

        Assert.That((result.ExitCode, result.Stdout, result.Stderr), Is.EqualTo((1, "", "Unknown command: no-such-command\n" + Usage)));
    }

    [Test]
    public async Task A_missing_required_parameter_is_reported_before_the_credentials_are_checked()
    {
        var withGood = await XeAsync("vm-param-list");
        var withBad = await XeAsUserAsync("root", "wrong-password", "vm-param-list");

        Assert.That((withGood.ExitCode, withGood.Stderr), Is.EqualTo((1, "Required parameter not found: uuid\n" + Usage)));
        Assert.That((withBad.ExitCode, withBad.Stderr), Is.EqualTo((1, "Required parameter not found: uuid\n" + Usage)));
    }

    [Test]
    public async Task Bad_credentials_answer_Authentication_failed_without_an_error_code()
    {
        var result = await XeAsUserAsync("root", "wrong-password", "vm-list");

        Assert.That((result.ExitCode, result.Stdout, result.Stderr), Is.EqualTo((1, "", "Authentication failed\n" + Usage)));
    }

    [Test]
    public async Task A_switch_without_its_value_is_a_syntax_error()
    {
        var result = await XeAsync("vm-list", "-x");

        Assert.That((result.ExitCode, result.Stderr), Is.EqualTo((1, "Syntax error: \n" + Usage)));
    }

    [Test]
    public async Task A_known_XenAPI_error_prints_its_datamodel_sentence_and_named_parameters()
    {
        var result = await XeAsync("vm-param-list", "uuid=nope");

        Assert.That((result.ExitCode, result.Stdout, result.Stderr),
            Is.EqualTo((1, "", "The uuid you supplied was invalid.\ntype: VM\nuuid: nope\n")));
    }

    [Test]
    public async Task Setting_a_read_only_field_is_refused_in_the_CLI_words()
    {
        var vm = await Client.CreateVmAsync("errors-ro", withDevices: false);
        var uuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;

        var result = await XeAsync("vm-param-set", $"uuid={uuid}", "power-state=running");

        Assert.That((result.ExitCode, result.Stderr), Is.EqualTo((1, "Error: Field 'power-state' is read-only.\n")));
    }

    [Test]
    public async Task Getting_an_unknown_field_answers_the_Missing_parameter_error_message()
    {
        var vm = await Client.CreateVmAsync("errors-missing", withDevices: false);
        var uuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;

        var result = await XeAsync("vm-param-get", $"uuid={uuid}", "param-name=no-such-field");

        Assert.That((result.ExitCode, result.Stderr), Is.EqualTo((1, "Error code: Missing parameter\nError parameters: no-such-field\n")));
    }

    [Test]
    public async Task Adding_an_existing_map_key_prints_the_error_with_the_reference_as_uuid()
    {
        var vm = await Client.CreateVmAsync("errors-dup", withDevices: false);
        var uuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
        await Client.InvokeAsync("VM.add_to_other_config", vm, "k", "v");

        var result = await XeAsync("vm-param-add", $"uuid={uuid}", "param-name=other-config", "k=w");

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Does.StartWith("You tried to add a key-value pair to a map, but that key is already there.\n"), result.ToString());
    }

    [Test]
    public async Task An_unknown_filter_field_fails_the_list()
    {
        var result = await XeAsync("vm-list", "no-such-field=1");

        Assert.That((result.ExitCode, result.Stderr), Is.EqualTo((1, "Error: Unknown field 'no-such-field'\n")));
    }
}
