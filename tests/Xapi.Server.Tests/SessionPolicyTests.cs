using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

public class SessionPolicyTests
{
    [Test]
    public async Task Idle_sessions_expire_and_active_ones_stay()
    {
        var time = new ManualTime();
        await using var daemon = await TestDaemon.StartAsync(o => o.SessionIdleTimeout = TimeSpan.FromMinutes(30), time);
        using var idle = await daemon.LoginAsync();
        using var active = await daemon.LoginAsync();
        time.Advance(TimeSpan.FromMinutes(20));
        await active.InvokeAsync("pool.get_all");
        time.Advance(TimeSpan.FromMinutes(20));
        var expired = daemon.Service<SessionManager>().ExpireIdle();
        Assert.That(expired, Is.EqualTo(1));
        await XenApiAssert.FailsAsync(() => idle.InvokeAsync("pool.get_all"), "SESSION_INVALID", idle.Session!);
        Assert.That(await active.InvokeAsync("pool.get_all"), Is.Not.Empty);
    }

    [Test]
    public async Task Roles_limit_what_a_session_may_call()
    {
        await using var daemon = await TestDaemon.StartAsync();
        var session = daemon.Service<SessionManager>().CreateSession("auditor", "test", RoleSet.ReadOnly, isLocalSuperuser: false);
        using var client = daemon.Client();
        var vms = (IReadOnlyList<object?>)(await client.CallAsync("VM.get_all", [session]))!;
        await XenApiAssert.FailsAsync(() => client.CallAsync("VM.set_name_label", [session, vms[0], "x"]),
            "RBAC_PERMISSION_DENIED", "vm.set_name_label",
            "No permission in user session. (Roles with this permission: vm-power-admin, vm-admin, pool-admin, pool-operator)");
    }

    [Test]
    public async Task The_root_password_can_be_changed()
    {
        await using var daemon = await TestDaemon.StartAsync();
        using var client = await daemon.LoginAsync();
        await XenApiAssert.FailsAsync(() => client.InvokeAsync("session.change_password", "not-the-old-one", "new"), "CHANGE_PASSWORD_REJECTED");
        await client.InvokeAsync("session.change_password", TestDaemon.Password, "brand-new");
        using var fresh = daemon.Client();
        await XenApiAssert.FailsAsync(() => fresh.LoginAsync("root", TestDaemon.Password), "SESSION_AUTHENTICATION_FAILED");
        Assert.That(await fresh.LoginAsync("root", "brand-new"), Does.StartWith("OpaqueRef:"));
    }

    [Test]
    public async Task A_generated_root_password_is_stored_only_as_a_hash()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.RootPassword = null);
        var generated = daemon.Host.GeneratedRootPassword;
        Assert.That(generated, Is.Not.Null.And.Not.Empty);
        var stored = File.ReadAllText(Path.Combine(daemon.Host.Options.DataDir, "root-password"));
        Assert.Multiple(async () =>
        {
            Assert.That(stored, Does.StartWith("pbkdf2-sha256$").And.Not.Contain(generated!));
            using var client = daemon.Client();
            Assert.That(await client.LoginAsync("root", generated!), Does.StartWith("OpaqueRef:"));
        });
    }

    [Test]
    public async Task Https_serves_the_api_with_a_certificate_kept_in_the_data_dir()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.HttpsPort = -1);
        Assert.That(daemon.Host.HttpsUri, Is.Not.Null);
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, cert, _, _) => cert is not null };
        using var http = new HttpClient(handler);
        using var client = new XenApiClient(daemon.Host.HttpsUri!, RpcDialect.XmlRpc, http);
        Assert.Multiple(async () =>
        {
            Assert.That(await client.LoginAsync("root", TestDaemon.Password), Does.StartWith("OpaqueRef:"));
            Assert.That(File.Exists(Path.Combine(daemon.Host.Options.DataDir, "xapi-ssl.pfx")), Is.True);
        });
    }
}

public class ServerOptionsTests
{
    [Test]
    public void Command_line_beats_environment_beats_config_file()
    {
        var config = Path.GetTempFileName();
        File.WriteAllText(config, """{ "HttpPort": 1111, "HttpsPort": 2222, "DataDir": "/from/file", "LogLevel": "Debug" }""");
        try
        {
            var options = ServerOptions.Load(
                ["--config", config, "--http-port", "3333"],
                new Dictionary<string, string?> { ["XAPI_HTTP_PORT"] = "4444", ["XAPI_DATA_DIR"] = "/from/env", ["PATH"] = "/bin" });
            Assert.Multiple(() =>
            {
                Assert.That(options.HttpPort, Is.EqualTo(3333));
                Assert.That(options.DataDir, Is.EqualTo("/from/env"));
                Assert.That(options.HttpsPort, Is.EqualTo(2222));
                Assert.That(options.LogLevel, Is.EqualTo("Debug"));
            });
        }
        finally
        {
            File.Delete(config);
        }
    }

    [Test]
    public void Defaults_are_those_of_a_plain_install()
    {
        var options = ServerOptions.Load([], new Dictionary<string, string?>());
        Assert.Multiple(() =>
        {
            Assert.That(options.HttpPort, Is.EqualTo(8080));
            Assert.That(options.HttpsPort, Is.Zero);
            Assert.That(options.MaxBodyBytes, Is.EqualTo(300 * 1024));
        });
    }

    [Test]
    public void The_clean_shutdown_timeout_is_xapis_twenty_minutes_unless_set_and_must_be_positive()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ServerOptions.Load([], new Dictionary<string, string?>()).DomainShutdownTotalTimeout, Is.EqualTo(TimeSpan.FromSeconds(1200)));
            Assert.That(ServerOptions.Load(["--domain-shutdown-total-timeout", "00:00:20"], new Dictionary<string, string?>()).DomainShutdownTotalTimeout,
                Is.EqualTo(TimeSpan.FromSeconds(20)));
            Assert.That(ServerOptions.Load([], new Dictionary<string, string?> { ["XAPI_DOMAIN_SHUTDOWN_TOTAL_TIMEOUT"] = "00:01:00" }).DomainShutdownTotalTimeout,
                Is.EqualTo(TimeSpan.FromMinutes(1)));
            Assert.That(() => ServerOptions.Load(["--domain-shutdown-total-timeout", "00:00:00"], new Dictionary<string, string?>()),
                Throws.TypeOf<FormatException>().With.Message.Contains("DomainShutdownTotalTimeout"));
        });
    }

    [Test]
    public void A_missing_config_file_is_a_clear_error() =>
        Assert.Throws<FileNotFoundException>(() => ServerOptions.Load(["--config", "/no/such/file.json"], new Dictionary<string, string?>()));

    [TestCase(new[] { "--salvage-journal" }, true)]
    [TestCase(new[] { "--salvage-journal", "--http-port", "1234" }, true)]
    [TestCase(new[] { "--salvage-journal", "false" }, false)]
    [TestCase(new[] { "--http-port", "1234" }, false)]
    public void The_salvage_option_is_a_flag_that_may_be_given_bare(string[] args, bool salvage)
    {
        var options = ServerOptions.Load(args, new Dictionary<string, string?>());
        Assert.That(options.SalvageJournal, Is.EqualTo(salvage));
    }

    [TestCase("--log-level", "Chatty", "LogLevel")]
    [TestCase("--listen", "not-an-address", "ListenAddress")]
    [TestCase("--database", "sqlite", "Database")]
    [TestCase("--http-port", "70000", "HttpPort")]
    public void A_setting_the_daemon_cannot_use_is_refused_by_name_at_load(string option, string value, string named)
    {
        var e = Assert.Throws<FormatException>(() => ServerOptions.Load([option, value], new Dictionary<string, string?>()));
        Assert.That(e!.Message, Does.Contain(named));
    }
}
