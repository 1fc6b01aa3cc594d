using System.Diagnostics;
using Xapi.Server.Tests;
using Xapi.Tests;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// The clients people actually use, over real sockets: the npm xen-api connector (Xen
/// Orchestra) and XenAPI.py from Debian's python3-os-xenapi (OpenStack). The test command
/// installs both and sets XAPI_CLIENT_TESTS=required, so a missing client fails there.
/// </summary>
public class RealClientTests
{
    private static readonly string ClientsDir = Path.Combine(RepositoryRoot.Path, "tests", "clients");

    private static void RequireOrIgnore(bool present, string what)
    {
        if (present)
        {
            return;
        }
        if (Environment.GetEnvironmentVariable("XAPI_CLIENT_TESTS") == "required")
        {
            Assert.Fail($"{what} is not installed; the test command should have installed it");
        }
        Assert.Ignore($"{what} is not installed (run the README's test command)");
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = ClientsDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        var output = await stdout + await stderr;
        TestContext.Out.WriteLine(output);
        return (process.ExitCode, output);
    }

    [TestCase("auto")]
    [TestCase("xml-rpc")]
    public async Task Npm_xen_api_connects_caches_objects_and_renames_a_vm(string transport)
    {
        RequireOrIgnore(Directory.Exists(Path.Combine(ClientsDir, "node_modules", "xen-api")), "npm xen-api");
        await using var daemon = await TestDaemon.StartAsync();
        var (exitCode, output) = await RunAsync("node", "smoke.mjs", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password, transport);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("pools=1 hosts=1").And.Contain("OK"));
        });
        var renamed = daemon.Database.Snapshot.All(Xapi.Model.ApiSchema.Class("VM"))
            .Select(r => (string)r[Xapi.Model.ApiSchema.Class("VM").FieldsByName["name_label"]]!);
        Assert.That(renamed, Has.Some.StartsWith("renamed by xen-api"), "the rename reached the database");
    }

    [Test]
    public async Task Npm_xen_api_cache_follows_another_client_and_async_calls_settle_through_tasks()
    {
        RequireOrIgnore(Directory.Exists(Path.Combine(ClientsDir, "node_modules", "xen-api")), "npm xen-api");
        await using var daemon = await TestDaemon.StartAsync();
        var (exitCode, output) = await RunAsync("node", "events.mjs", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("add seen").And.Contain("mod seen").And.Contain("del seen"));
            Assert.That(output, Does.Contain("failing callAsync rejected with HANDLE_INVALID").And.Contain("OK"));
        });
    }

    [Test]
    public async Task Xenapi_py_logs_in_with_four_parameters_and_reads_the_pool()
    {
        const string python = "/usr/bin/python3";
        RequireOrIgnore(File.Exists("/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py") && File.Exists(python), "python3-os-xenapi");
        await using var daemon = await TestDaemon.StartAsync();
        var (exitCode, output) = await RunAsync(python, "xenapi_py_smoke.py", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("api=2.21").And.Contain("OK"));
            var methods = int.Parse(output.Split('\n').Single(l => l.StartsWith("methods=", StringComparison.Ordinal))["methods=".Length..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.That(methods, Is.GreaterThan(1900), "system.listMethods through Python's xmlrpc.client");
        });
    }

    [Test]
    public async Task Xenapi_py_creates_and_destroys_a_vm_with_its_disk_cd_and_vifs_as_openstack_nova_does()
    {
        const string python = "/usr/bin/python3";
        RequireOrIgnore(File.Exists("/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py") && File.Exists(python), "python3-os-xenapi");
        await using var daemon = await TestDaemon.StartAsync();
        var (exitCode, output) = await RunAsync(python, "xenapi_py_nova_records.py", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("OK"));
        });
    }

    [Test]
    public async Task Xenapi_py_runs_a_vm_through_start_on_shutdown_reboot_snapshot_revert_and_destroy_as_openstack_nova_does()
    {
        const string python = "/usr/bin/python3";
        RequireOrIgnore(File.Exists("/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py") && File.Exists(python), "python3-os-xenapi");
        await using var daemon = await TestDaemon.StartAsync(o => o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(200));
        var (exitCode, output) = await RunAsync(python, "xenapi_py_nova_lifecycle.py", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("OK"));
        });
    }

    [Test]
    public async Task Npm_xen_api_clones_provisions_and_starts_a_vm_through_tasks_and_sees_its_guest_metrics_as_xen_orchestra_does()
    {
        RequireOrIgnore(Directory.Exists(Path.Combine(ClientsDir, "node_modules", "xen-api")), "npm xen-api");
        await using var daemon = await TestDaemon.StartAsync(o => o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(200));
        var (exitCode, output) = await RunAsync("node", "vm-lifecycle.mjs", daemon.Uri.ToString().TrimEnd('/'), TestDaemon.Password);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("started through a task").And.Contain("guest metrics in the cache").And.Contain("OK"));
        });
    }
    /// <summary>A pool of two: the joined member answers a login with HOST_IS_SLAVE and the master's address.</summary>
    private static async Task<TestPool> JoinedPoolAsync()
    {
        var pool = await TestPool.StartAsync(2);
        using var member = await pool.Hosts[1].LoginAsync();
        await member.InvokeAsync("pool.join", TestPool.AddressOf(0).ToString(), "root", TestDaemon.Password);
        return pool;
    }

    [Test]
    public async Task Xenapi_py_pointed_at_a_pool_member_follows_host_is_slave_to_the_master()
    {
        const string python = "/usr/bin/python3";
        RequireOrIgnore(File.Exists("/usr/lib/python3/dist-packages/os_xenapi/client/session.py") && File.Exists(python), "python3-os-xenapi");
        await using var pool = await JoinedPoolAsync();
        var (exitCode, output) = await RunAsync(python, "xenapi_py_host_is_slave.py", pool.Hosts[1].Uri.ToString().TrimEnd('/'), TestDaemon.Password,
            TestPool.AddressOf(0).ToString(), "2");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain($"to http://{TestPool.AddressOf(0)}:{pool.Port}").And.Contain("OK"));
        });
    }

    [Test]
    public async Task Npm_xen_api_pointed_at_a_pool_member_follows_host_is_slave_to_the_master()
    {
        RequireOrIgnore(Directory.Exists(Path.Combine(ClientsDir, "node_modules", "xen-api")), "npm xen-api");
        await using var pool = await JoinedPoolAsync();
        var (exitCode, output) = await RunAsync("node", "host-is-slave.mjs", pool.Hosts[1].Uri.ToString().TrimEnd('/'), TestDaemon.Password,
            TestPool.AddressOf(0).ToString(), "2");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("hosts=2").And.Contain("OK"));
        });
    }
    [Test]
    public async Task Xenapi_py_builds_a_three_host_pool_spreads_vms_migrates_one_live_ejects_and_rejoins_a_member_and_designates_a_new_master()
    {
        const string python = "/usr/bin/python3";
        RequireOrIgnore(File.Exists("/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py") && File.Exists(python), "python3-os-xenapi");
        await using var pool = await TestPool.StartAsync(3);
        var (exitCode, output) = await RunAsync(python, ["xenapi_py_pool.py", TestDaemon.Password, .. pool.Hosts.Select(h => h.Uri.ToString().TrimEnd('/'))]);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("pool_migrate member to member: 3 hosts agree").And.Contain("pool_migrate to the master: 3 hosts agree")
                .And.Contain("designate new master: 3 hosts agree").And.Contain("OK"));
        });
    }
    [Test]
    public async Task Npm_xen_api_builds_a_three_host_pool_spreads_vms_migrates_one_live_ejects_and_rejoins_a_member_and_designates_a_new_master()
    {
        RequireOrIgnore(Directory.Exists(Path.Combine(ClientsDir, "node_modules", "xen-api")), "npm xen-api");
        await using var pool = await TestPool.StartAsync(3);
        var (exitCode, output) = await RunAsync("node", ["pool.mjs", TestDaemon.Password, .. pool.Hosts.Select(h => h.Uri.ToString().TrimEnd('/'))]);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, output);
            Assert.That(output, Does.Contain("pool_migrate: the VM runs on the host at").And.Contain("rejoin: 3 hosts")
                .And.Contain("designate: the pool's master is the host at").And.Contain("OK"));
        });
    }
}
