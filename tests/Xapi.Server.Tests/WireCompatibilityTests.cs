using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Tests;

namespace Xapi.Server.Tests;

[TestFixtureSource(typeof(RoundTripTests), nameof(RoundTripTests.Protocols))]
public class WireCompatibilityTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    [Test]
    public async Task System_list_methods_answers_every_sync_wire_name_bare_over_xml_rpc()
    {
        using var http = new HttpClient();
        var body = Dialect == RpcDialect.XmlRpc
            ? """<?xml version="1.0"?><methodCall><methodName>system.listMethods</methodName><params></params></methodCall>"""
            : """{"method":"system.listMethods","params":[],"id":1}""";
        var reply = await (await http.PostAsync(new Uri(Daemon.Uri, Dialect == RpcDialect.XmlRpc ? "/" : "/jsonrpc"),
            new StringContent(body, new MediaTypeHeaderValue(Dialect == RpcDialect.XmlRpc ? "text/xml" : "application/json")))).Content.ReadAsStringAsync();
        if (Dialect == RpcDialect.XmlRpc)
        {
            Assert.That(reply, Does.StartWith("<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data><value>").And.Not.Contain("Status"));
        }
        var methods = ((IReadOnlyList<object?>)(await Client.CallAsync("system.listMethods", []))!).Cast<string>().ToList();
        Assert.Multiple(() =>
        {
            Assert.That(methods, Has.Count.GreaterThan(1900));
            Assert.That(methods, Does.Contain("VM.start").And.Contain("pool.get_all_records"));
            Assert.That(methods.Where(m => m.StartsWith("Async.", StringComparison.Ordinal) || m.StartsWith("system.", StringComparison.Ordinal)), Is.Empty);
        });
    }

    [Test]
    public async Task Host_list_methods_answers_the_same_list()
    {
        var host = ((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0];
        var listed = (IReadOnlyList<object?>)(await Client.InvokeAsync("host.list_methods"))!;
        var system = (IReadOnlyList<object?>)(await Client.CallAsync("system.listMethods", []))!;
        Assert.That(listed, Is.EqualTo(system));
        Assert.That(host, Is.Not.Null);
    }

    [Test]
    public async Task Pool_admin_holds_every_permission_as_a_role_of_its_own()
    {
        var roles = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("role.get_all_records"))!;
        var byName = roles.ToDictionary(r => (string)((IReadOnlyDictionary<string, object?>)r.Value!)["name_label"]!, r => (IReadOnlyDictionary<string, object?>)r.Value!);
        var poolAdmin = byName["pool-admin"];
        var subroles = ((IReadOnlyList<object?>)poolAdmin["subroles"]!).Cast<string>().ToList();
        var readOnly = ((IReadOnlyList<object?>)byName["read-only"]["subroles"]!).Cast<string>().ToList();
        var vmOperator = ((IReadOnlyList<object?>)byName["vm-operator"]["subroles"]!).Cast<string>().ToList();
        Assert.Multiple(() =>
        {
            Assert.That(poolAdmin["uuid"], Is.EqualTo("0165f154-ba3e-034e-6b27-5d271af109ba"), "real hosts derive role uuids from their names");
            Assert.That(subroles, Has.Count.GreaterThan(1500));
            Assert.That(byName.Keys, Is.SupersetOf(new[] { "vm.start", "vm.set_name_label", "pool.enable_ha", "task.destroy/any" }));
            Assert.That(byName["vm.start"]["subroles"], Is.Empty);
            Assert.That(byName["vm.start"]["name_description"], Is.EqualTo("A basic permission"));
            Assert.That(subroles, Is.SupersetOf(vmOperator));
            Assert.That(readOnly.Select(r => ((IReadOnlyDictionary<string, object?>)roles[r]!)["name_label"]), Does.Contain("vm.get_record").And.Not.Contain("vm.start"));
            Assert.That(vmOperator.Select(r => ((IReadOnlyDictionary<string, object?>)roles[r]!)["name_label"]), Does.Contain("vm.start").And.Not.Contain("pool.enable_ha"));
        });
        // Each composite lists exactly the permissions whose datamodel roles include it.
        foreach (var (role, name) in Xapi.Model.Roles.All)
        {
            var expected = ApiSchema.Classes.SelectMany(c => c.Messages).Where(m => m.Roles.HasFlag(role)).Select(m => m.WireName.ToLowerInvariant()).ToHashSet();
            var actual = ((IReadOnlyList<object?>)byName[name]["subroles"]!).Select(r => (string)((IReadOnlyDictionary<string, object?>)roles[(string)r!]!)["name_label"]!).ToHashSet();
            actual.Remove(Rbac.DestroyAnyTask);
            Assert.That(actual, Is.EquivalentTo(expected), name);
        }
    }

    [Test]
    public async Task Permission_queries_expand_and_invert_the_role_lists()
    {
        var vmStart = ((IReadOnlyList<object?>)(await Client.InvokeAsync("role.get_by_name_label", "vm.start"))!).Single();
        var operatorRole = ((IReadOnlyList<object?>)(await Client.InvokeAsync("role.get_by_name_label", "vm-operator"))!).Single();
        var holders = ((IReadOnlyList<object?>)(await Client.InvokeAsync("role.get_by_permission_name_label", "vm.start"))!)
            .Select(async r => (string)(await Client.InvokeAsync("role.get_name_label", r))!).Select(t => t.Result).ToList();
        Assert.Multiple(async () =>
        {
            Assert.That(await Client.InvokeAsync("role.get_permissions", vmStart), Is.EqualTo(new[] { vmStart }));
            Assert.That((IReadOnlyList<object?>)(await Client.InvokeAsync("role.get_permissions_name_label", operatorRole))!, Does.Contain("vm.start").And.Not.Contain("vm.destroy"));
            Assert.That(holders, Is.EquivalentTo(new[] { "pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator" }));
            Assert.That(await Client.InvokeAsync("role.get_by_permission", vmStart), Has.Count.EqualTo(5));
            Assert.That(await Client.InvokeAsync("role.get_by_permission_name_label", "no.such_permission"), Is.Empty);
        });
    }

    [Test]
    public async Task Network_create_picks_a_free_bridge_and_refuses_bad_or_taken_names()
    {
        async Task<string> CreateAsync(string bridge)
        {
            var record = ApiSchema.Class("network").MinimalRecord();
            record["name_label"] = "net " + bridge;
            record["bridge"] = bridge;
            return (string)(await Client.InvokeAsync("network.create", record))!;
        }
        var first = await CreateAsync("");
        var second = await CreateAsync("");
        var firstBridge = (string)(await Client.InvokeAsync("network.get_bridge", first))!;
        var secondBridge = (string)(await Client.InvokeAsync("network.get_bridge", second))!;
        Assert.Multiple(() =>
        {
            Assert.That(firstBridge, Does.Match("^xapi[0-9]+$"));
            Assert.That(secondBridge, Does.Match("^xapi[0-9]+$").And.Not.EqualTo(firstBridge));
        });
        await XenApiAssert.FailsAsync(() => CreateAsync("eth7"), "INVALID_VALUE", "bridge", "eth7");
        await XenApiAssert.FailsAsync(() => CreateAsync("a-very-long-bridge-name"), "INVALID_VALUE", "bridge", "a-very-long-bridge-name");
        var custom = "br" + Guid.NewGuid().ToString("N")[..8];
        await CreateAsync(custom);
        await XenApiAssert.FailsAsync(() => CreateAsync(custom), "BRIDGE_NAME_EXISTS", custom);
    }
}

public class LocalSocketTests
{
    private static HttpClient UnixClient(string path) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, cancellation) =>
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellation);
            return new NetworkStream(socket, ownsSocket: true);
        },
    })
    { BaseAddress = new Uri("http://localhost/") };

    private const string WrongPasswordLogin =
        """{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","not-the-password","2.21","local-test"],"id":1}""";

    [Test]
    public async Task A_root_peer_on_the_local_socket_logs_in_without_a_password_and_a_tcp_client_does_not()
    {
        if (Environment.UserName != "root")
        {
            Assert.Ignore("needs to run as root to be a root peer");
        }
        await using var daemon = await TestDaemon.StartAsync();
        using var local = UnixClient(daemon.Host.Options.UnixSocketPath);
        var reply = await (await local.PostAsync("/jsonrpc", new StringContent(WrongPasswordLogin, Encoding.UTF8, "application/json"))).Content.ReadAsStringAsync();
        Assert.That(reply, Does.Contain("\"result\":\"OpaqueRef:"));
        var session = Regex.Match(reply, "OpaqueRef:[0-9a-f-]+").Value;
        using var tcp = daemon.Client();
        Assert.That(await tcp.CallAsync("session.get_is_local_superuser", [session, session]), Is.EqualTo(true));
        await XenApiAssert.FailsAsync(() => tcp.LoginAsync("root", "not-the-password"), "SESSION_AUTHENTICATION_FAILED");
    }

    [Test]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task A_non_root_peer_on_the_local_socket_must_prove_the_password()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root" || !File.Exists("/usr/bin/setpriv") || !File.Exists("/usr/bin/curl"))
        {
            Assert.Ignore("needs root, setpriv and curl to connect as another user");
        }
        await using var daemon = await TestDaemon.StartAsync();
        var socket = daemon.Host.Options.UnixSocketPath;
        File.SetUnixFileMode(Path.GetDirectoryName(socket)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute);
        File.SetUnixFileMode(socket, (UnixFileMode)0b111_111_111);
        using var curl = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/curl", "-s", "--unix-socket", socket, "-H", "Content-Type: application/json",
             "--data", WrongPasswordLogin, "http://localhost/jsonrpc"])
        { RedirectStandardOutput = true })!;
        var reply = await curl.StandardOutput.ReadToEndAsync();
        await curl.WaitForExitAsync();
        Assert.That(reply, Does.Contain("SESSION_AUTHENTICATION_FAILED"));
    }
}

/// <summary>The house rules for hand-written server code.</summary>
public class HouseRuleTests
{
    [Test]
    public void Hand_written_server_code_spells_no_error_code_and_names_no_field_in_a_string()
    {
        var codes = ApiSchema.Errors.Select(e => e.Code).ToHashSet(StringComparer.Ordinal);
        var fields = ApiSchema.Classes.SelectMany(c => c.Fields).Select(f => f.Name).ToHashSet(StringComparer.Ordinal);
        var offences = new List<string>();
        foreach (var path in Directory.EnumerateFiles(Path.Combine(RepositoryRoot.Path, "src", "Xapi.Server"), "*.cs", SearchOption.AllDirectories)
                     .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)))
        {
            var lines = File.ReadAllLines(path);
            for (var i = 0; i < lines.Length; i++)
            {
                foreach (Match literal in Regex.Matches(lines[i], "\"([A-Z][A-Z0-9_]+)\""))
                {
                    if (codes.Contains(literal.Groups[1].Value))
                    {
                        offences.Add($"{Path.GetFileName(path)}:{i + 1}: error code {literal.Value}");
                    }
                }
                foreach (Match indexer in Regex.Matches(lines[i], "\\[\"([A-Za-z_]+)\"\\] ="))
                {
                    if (fields.Contains(indexer.Groups[1].Value))
                    {
                        offences.Add($"{Path.GetFileName(path)}:{i + 1}: field {indexer.Groups[1].Value} set by name");
                    }
                }
                if (lines[i].Contains("FieldsByName[\"", StringComparison.Ordinal))
                {
                    offences.Add($"{Path.GetFileName(path)}:{i + 1}: field indexed by name");
                }
            }
        }
        Assert.That(offences, Is.Empty);
    }
}
