using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Xapi.Server.Tests.Cli;

/// <summary>
/// The xe client's own behaviour: where it connects and as whom (command line, ~/.xe,
/// XE_EXTRA_ARGS, password files), TLS by default, and what it says when it cannot connect.
/// A command the server does not know proves the request reached the server as that user.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class XeClientTests
{
    private const string UnknownCommand = "no-such-command";
    private TestDaemon _daemon = null!;

    [OneTimeSetUp]
    public async Task StartAsync() => _daemon = await TestDaemon.StartAsync(o => o.HttpsPort = -1);

    [OneTimeTearDown]
    public async Task StopAsync() => await _daemon.DisposeAsync();

    private string Port => _daemon.Uri.Port.ToString(CultureInfo.InvariantCulture);

    [Test]
    public async Task Without_a_command_xe_prints_its_usage_and_exits_0()
    {
        var result = await Xe.RunRawAsync([]);

        Assert.That(result.ExitCode, Is.Zero, result.ToString());
        Assert.That(result.Stderr, Does.StartWith("Usage:").And.Contain("[ -s <server> ]").And.Contain("xe help -s <server> -p <port>"));
    }

    [Test]
    public async Task Dash_version_prints_the_protocol_version_without_connecting()
    {
        var result = await Xe.RunRawAsync(["-version", "-s", "127.0.0.1", "-p", "1"]);

        Assert.That(result.ExitCode, Is.Zero, result.ToString());
        Assert.That(result.Stdout, Is.EqualTo("ThinCLI protocol: 0.2\n"));
    }

    [Test]
    public async Task A_port_where_nothing_listens_is_reported_with_exit_status_1()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var closedPort = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();

        var result = await Xe.RunRawAsync(["vm-list", "-s", "127.0.0.1", "-p", closedPort.ToString(CultureInfo.InvariantCulture), "--nossl"]);

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Is.EqualTo("Unable to contact server. Please check server and port settings.\n"));
    }

    [Test]
    public async Task A_server_that_does_not_speak_the_protocol_is_reported_as_no_management_agent()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var plainHttp = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            _ = await stream.ReadAsync(new byte[4096]);
            await stream.WriteAsync("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"u8.ToArray());
        });

        var result = await Xe.RunRawAsync(["vm-list", "-s", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), "--nossl"]);
        await plainHttp;

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Does.StartWith("Failed to contact a running management agent.\nTry specifying a server name and port.\n"));
    }

    [Test]
    public async Task The_rc_file_in_home_supplies_server_port_and_credentials()
    {
        var home = Directory.CreateTempSubdirectory("xe-rc-").FullName;
        await File.WriteAllTextAsync(Path.Combine(home, ".xe"),
            $"server=127.0.0.1\nport={Port}\nusername=root\npassword={TestDaemon.Password}\nnossl=true\n");

        var result = await Xe.RunRawAsync([UnknownCommand], new Dictionary<string, string> { ["HOME"] = home });

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Does.Contain($"Unknown command: {UnknownCommand}"), "the command reached the server named in ~/.xe");
    }

    [Test]
    public async Task The_command_line_overrides_the_rc_file()
    {
        var home = Directory.CreateTempSubdirectory("xe-rc-").FullName;
        await File.WriteAllTextAsync(Path.Combine(home, ".xe"), "server=127.0.0.1\nport=1\nnossl=true\n");

        var result = await Xe.RunRawAsync([UnknownCommand, "-p", Port], new Dictionary<string, string> { ["HOME"] = home });

        Assert.That(result.Stderr, Does.Contain($"Unknown command: {UnknownCommand}"), result.ToString());
    }

    [Test]
    public async Task XE_EXTRA_ARGS_supplies_comma_separated_options()
    {
        var result = await Xe.RunRawAsync([UnknownCommand],
            new Dictionary<string, string> { ["XE_EXTRA_ARGS"] = $"server=127.0.0.1,port={Port},nossl=true,password={TestDaemon.Password}" });

        Assert.That(result.Stderr, Does.Contain($"Unknown command: {UnknownCommand}"), result.ToString());
    }

    [Test]
    public async Task A_password_file_gives_the_user_on_its_first_line_and_the_password_on_its_second()
    {
        var file = Path.Combine(Directory.CreateTempSubdirectory("xe-pwf-").FullName, "pw");
        await File.WriteAllTextAsync(file, $"root\n{TestDaemon.Password}\n");

        var result = await Xe.RunRawAsync([UnknownCommand, "-s", "127.0.0.1", "-p", Port, "--nossl", "-pwf", file]);

        Assert.That(result.Stderr, Does.Contain($"Unknown command: {UnknownCommand}"), result.ToString());
    }

    [Test]
    public async Task A_password_file_with_one_line_is_refused_before_connecting()
    {
        var file = Path.Combine(Directory.CreateTempSubdirectory("xe-pwf-").FullName, "pw");
        await File.WriteAllTextAsync(file, "root\n");

        var result = await Xe.RunRawAsync(["vm-list", "-s", "127.0.0.1", "-p", "1", "--nossl", "-pwf", file]);

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Is.EqualTo("Error: password file format: expecting username on the first line, password on the second line\n"));
    }

    [Test]
    public async Task Without_nossl_xe_speaks_TLS_to_the_https_port_and_accepts_the_hosts_self_signed_certificate()
    {
        var https = _daemon.Host.HttpsUri!;

        var result = await Xe.RunRawAsync([UnknownCommand, "-s", "127.0.0.1", "-p", https.Port.ToString(CultureInfo.InvariantCulture), "-pw", TestDaemon.Password]);

        Assert.That(result.ExitCode, Is.EqualTo(1), result.ToString());
        Assert.That(result.Stderr, Does.Contain($"Unknown command: {UnknownCommand}"));
    }

    [Test]
    public async Task A_bad_port_number_is_a_usage_error()
    {
        var result = await Xe.RunRawAsync(["vm-list", "-p", "70000"]);

        Assert.That(result.Stderr, Does.StartWith("Port number must be an integer (0-65535)\nUsage:"), result.ToString());
    }
}
