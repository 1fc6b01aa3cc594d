using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xapi.Server.Tests.Api.VM;
using Xapi.Tests;

namespace Xapi.Server.Tests.Cli;

/// <summary>
/// The bash completion script in a real bash, completing against a running daemon through the
/// built xe: sourced, registered, and called as bash calls it (COMP_LINE, COMP_POINT, COMP_WORDS).
/// </summary>
[TestFixture]
public sealed class CompletionTests : XeFixture
{
    private const string VmName = "completion test vm";

    private static string Script => Path.Combine(RepositoryRoot.Path, "src", "Xapi.Cli", "bash-completion", "xe");

    private string _vmUuid = "";

    [OneTimeSetUp]
    public async Task CreateVmAsync()
    {
        var vm = await Client.CreateVmAsync(VmName, withDevices: false);
        _vmUuid = (string)(await Client.InvokeAsync("VM.get_uuid", vm))!;
    }

    [Test]
    public async Task Sourcing_the_script_registers_the_xe_completion_function_without_spacing_after_open_words()
    {
        var completion = await CompleteAsync("xe vm-st");

        Assert.That(completion.Registration, Does.Match(@"^complete\b.*-o nospace\b.*-F _xe xe$|^complete\b.*-F _xe\b.*-o nospace\b.* xe$"), completion.ToString());
    }

    [Test]
    public async Task A_partial_command_name_completes_to_the_commands_starting_with_it()
    {
        var completion = await CompleteAsync("xe vm-st");

        Assert.That(completion.Replies.Select(r => r.TrimEnd()), Does.Contain("vm-start"), completion.ToString());
        Assert.That(completion.Replies, Has.All.StartWith("vm-st"), completion.ToString());
    }

    [Test]
    public async Task A_prefix_spanning_several_command_families_offers_the_families()
    {
        var completion = await CompleteAsync("xe v");

        Assert.That(completion.Replies, Does.Contain("vm-").And.Contain("vdi-"), completion.ToString());
        Assert.That(completion.Replies, Has.All.StartWith("v"), completion.ToString());
    }

    [Test]
    public async Task A_command_followed_by_a_space_offers_its_parameters_and_its_selector()
    {
        var completion = await CompleteAsync("xe vm-start ");

        Assert.That(completion.Replies, Is.SupersetOf(new[] { "vm=", "force=", "on=", "paused=" }), completion.ToString());
    }

    [Test]
    public async Task A_parameter_already_on_the_line_is_not_offered_again()
    {
        var completion = await CompleteAsync("xe vm-start paused=true ");

        Assert.That(completion.Replies, Does.Contain("vm="), completion.ToString());
        Assert.That(completion.Replies, Does.Not.Contain("paused="), completion.ToString());
    }

    [Test]
    public async Task Vm_equals_offers_the_names_of_the_daemons_vms_quoted_for_the_shell_and_no_templates()
    {
        var completion = await CompleteAsync("xe vm-start vm=");

        // After "vm=" bash replaces only the value (COMP_WORDBREAKS has '='), so replies are values.
        Assert.That(completion.Replies.Select(r => r.TrimEnd()), Does.Contain(@"completion\ test\ vm"), completion.ToString());
        Assert.That(completion.Replies, Has.None.Contain("Debian"), "templates are not VMs to start: " + completion);
    }

    [Test]
    public async Task A_unique_vm_name_prefix_completes_to_the_whole_name_and_a_space()
    {
        var completion = await CompleteAsync("xe vm-start vm=completion\\ t");

        Assert.That(completion.Replies, Is.EqualTo(new[] { @"completion\ test\ vm " }), completion.ToString());
    }

    [Test]
    public async Task A_uuid_prefix_after_vm_equals_completes_to_the_vms_uuid()
    {
        var completion = await CompleteAsync("xe vm-start vm=" + _vmUuid[..8]);

        Assert.That(completion.Replies, Is.EqualTo(new[] { _vmUuid + " " }), completion.ToString());
    }

    [Test]
    public async Task Uuid_equals_offers_the_uuids_of_the_commands_class()
    {
        var completion = await CompleteAsync("xe vm-param-list uuid=");

        Assert.That(completion.Replies.Select(r => r.TrimEnd()), Does.Contain(_vmUuid), completion.ToString());
    }

    [Test]
    public async Task A_dash_after_the_command_offers_its_flags()
    {
        var completion = await CompleteAsync("xe vm-start --m");

        Assert.That(completion.Replies, Is.EquivalentTo(new[] { "--minimal", "--multiple" }), completion.ToString());
    }

    [Test]
    public async Task The_connection_options_on_the_line_choose_the_server_asked()
    {
        using var closed = new TcpListener(IPAddress.Loopback, 0);
        closed.Start();
        var deadPort = ((IPEndPoint)closed.LocalEndpoint).Port;
        closed.Stop();

        var elsewhere = await CompleteAsync("xe vm-st", ["-s", "127.0.0.1", "-p", deadPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--nossl"]);
        var here = await CompleteAsync("xe vm-st");

        Assert.That(elsewhere.Replies, Is.Empty, elsewhere.ToString());
        Assert.That(here.Replies, Is.Not.Empty, here.ToString());
    }

    [Test]
    public async Task Tab_in_an_interactive_bash_completes_a_command_and_a_vm_name()
    {
        // A terminal (script(1) gives bash a pty) and real readline: TAB completes in place, then
        // Ctrl-A and "echo " turn the completed line into one the shell prints.
        var connection = string.Join(' ', Xe.ConnectionArgs(Daemon));
        var input = $"source '{Script}'\n" +
                    $"xe {connection} vm-st\t\u0001echo \n" +
                    $"xe {connection} vm-start vm=compl\t\u0001echo \n" +
                    "exit\n";
        var output = await RunBashAsync(["-qfec", "bash --norc --noprofile -i", "/dev/null"], input, "script");

        Assert.That(output, Does.Contain($"xe {connection} vm-start \r\n").Or.Contain($"xe {connection} vm-start\r\n"), output);
        Assert.That(output, Does.Contain($"xe {connection} vm-start vm=completion test vm"), output);
    }

    private sealed record Completion(string Registration, IReadOnlyList<string> Replies, string Stderr)
    {
        public override string ToString() =>
            $"registration: {Registration}\nreplies ({Replies.Count}):\n{string.Join("\n", Replies.Select(r => $"[{r}]"))}\nstderr: {Stderr}";
    }

    /// <summary>
    /// Completes a line (xe, the daemon's connection options, then <paramref name="line"/> without its
    /// leading "xe") with the cursor at its end, as bash does on TAB.
    /// </summary>
    private async Task<Completion> CompleteAsync(string line, string[]? connection = null)
    {
        var full = "xe " + string.Join(' ', connection ?? Xe.ConnectionArgs(Daemon)) + line[2..];
        // The function named by the registration is called with bash's arguments and variables;
        // COMP_WORDS splits at COMP_WORDBREAKS as bash's would.
        const string Driver = """
            source "$1" || exit 3
            registration=$(complete -p xe) || exit 4
            printf '%s\n' "$registration"
            function=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$registration")
            COMP_LINE=$2
            COMP_POINT=${#COMP_LINE}
            COMP_WORDS=()
            word=""
            for ((i = 0; i < ${#COMP_LINE}; i++)); do
                c=${COMP_LINE:i:1}
                if [[ $c == ' ' ]]; then
                    [[ -n $word ]] && COMP_WORDS+=("$word")
                    word=""
                elif [[ $c == '\' ]]; then
                    word+=${COMP_LINE:i:2}
                    i=$((i + 1))
                elif [[ $c == [=:] ]]; then
                    [[ -n $word ]] && COMP_WORDS+=("$word")
                    COMP_WORDS+=("$c")
                    word=""
                else
                    word+=$c
                fi
            done
            if [[ -n $word || $COMP_LINE == *' ' ]]; then COMP_WORDS+=("$word"); fi
            COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
            COMP_TYPE=9
            COMP_KEY=9
            "$function" xe "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
            for reply in "${COMPREPLY[@]}"; do printf '%s\n' "$reply"; done
            """;
        var output = await RunBashAsync(["--norc", "--noprofile", "-c", Driver, "bash", Script, full], null, "bash");
        var lines = output.Split('\n');
        return new Completion(lines[0], lines.Skip(1).Where(l => l.Length > 0).ToList(), "");
    }

    private static async Task<string> RunBashAsync(string[] args, string? input, string program)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        // The built xe first on PATH; a HOME without ~/.xe or .bashrc.
        start.Environment["PATH"] = Path.GetDirectoryName(Xe.Executable) + ":" + Environment.GetEnvironmentVariable("PATH");
        start.Environment["HOME"] = Directory.CreateTempSubdirectory("xe-completion-home-").FullName;
        start.Environment["TERM"] = "dumb";
        start.Environment["PS1"] = "$ ";
        start.Environment.Remove("XE_EXTRA_ARGS");
        start.Environment.Remove("BASH_ENV");
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (input is not null)
        {
            await process.StandardInput.WriteAsync(input);
        }
        process.StandardInput.Close();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} did not exit; output so far: {(stdout.IsCompleted ? stdout.Result : "")}");
        }
        var error = await stderr;
        Assert.That(process.ExitCode, Is.Zero, $"{program} failed:\n{await stdout}\n{error}");
        return await stdout;
    }
}
