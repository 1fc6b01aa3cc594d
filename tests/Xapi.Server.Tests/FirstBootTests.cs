using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

public class FirstBootTests() : LoggedInFixture(RpcDialect.JsonRpcV2)
{
    private async Task<IReadOnlyDictionary<string, object?>> RecordAsync(string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls}.get_record", reference))!;

    private async Task<IReadOnlyDictionary<string, object?>> AllRecordsAsync(string cls) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls}.get_all_records"))!;

    [Test]
    public async Task A_fresh_host_is_the_master_of_its_pool()
    {
        var pools = await AllRecordsAsync("pool");
        var hosts = await AllRecordsAsync("host");
        var pool = (IReadOnlyDictionary<string, object?>)pools.Values.Single()!;
        Assert.Multiple(() =>
        {
            Assert.That(hosts, Has.Count.EqualTo(1));
            Assert.That(pool["master"], Is.EqualTo(hosts.Keys.Single()));
        });
    }

    [Test]
    public async Task The_host_reports_api_and_software_versions_clients_check()
    {
        var host = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
        var record = await RecordAsync("host", host);
        var software = (IReadOnlyDictionary<string, object?>)record["software_version"]!;
        Assert.Multiple(async () =>
        {
            Assert.That(await Client.InvokeAsync("host.get_API_version_major", host), Is.EqualTo(2L));
            Assert.That(await Client.InvokeAsync("host.get_API_version_minor", host), Is.EqualTo(21L));
            Assert.That((string)software["product_version"]!, Does.Match(@"^\d+(\.\d+)+$"));
            Assert.That((string)software["platform_version"]!, Does.Match(@"^\d+(\.\d+)+$"));
            Assert.That(software.Keys, Is.SupersetOf(new[] { "product_brand", "platform_name", "xapi", "build_number" }));
            Assert.That(record["enabled"], Is.EqualTo(true));
            Assert.That(((IReadOnlyList<object?>)record["host_CPUs"]!), Has.Count.EqualTo(Environment.ProcessorCount));
            Assert.That((IReadOnlyDictionary<string, object?>)record["cpu_info"]!, Does.ContainKey("cpu_count"));
        });
        var metrics = await RecordAsync("host_metrics", (string)record["metrics"]!);
        Assert.That((long)metrics["memory_total"]!, Is.GreaterThan(0L));
    }

    [Test]
    public async Task The_control_domain_runs_on_the_host()
    {
        var host = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
        var dom0 = (string)(await Client.InvokeAsync("host.get_control_domain", host))!;
        var record = await RecordAsync("VM", dom0);
        var resident = (IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_resident_VMs", host))!;
        Assert.Multiple(() =>
        {
            Assert.That(record["is_control_domain"], Is.EqualTo(true));
            Assert.That(record["power_state"], Is.EqualTo("Running"));
            Assert.That(record["resident_on"], Is.EqualTo(host));
            Assert.That(resident, Does.Contain(dom0));
        });
    }

    [Test]
    public async Task Management_network_templates_roles_and_storage_drivers_exist()
    {
        var pifs = (await AllRecordsAsync("PIF")).Values.Cast<IReadOnlyDictionary<string, object?>>().ToList();
        var templates = (await AllRecordsAsync("VM")).Values.Cast<IReadOnlyDictionary<string, object?>>().Where(v => (bool)v["is_a_template"]!).ToList();
        var roles = (await AllRecordsAsync("role")).Values.Cast<IReadOnlyDictionary<string, object?>>().Select(r => r["name_label"]).ToList();
        var sms = (await AllRecordsAsync("SM")).Values.Cast<IReadOnlyDictionary<string, object?>>().Select(r => r["type"]).ToList();
        Assert.Multiple(async () =>
        {
            Assert.That(pifs.Single()["management"], Is.EqualTo(true));
            var network = await RecordAsync("network", (string)pifs.Single()["network"]!);
            Assert.That((IReadOnlyList<object?>)network["PIFs"]!, Has.Count.EqualTo(1));
            Assert.That(templates.Select(t => t["name_label"]), Does.Contain("Other install media").And.Contain("Debian Bookworm 12"));
            Assert.That(templates.Select(t => (long)t["memory_static_max"]!), Is.All.GreaterThan(0L));
            Assert.That(roles, Is.SupersetOf(new[] { "pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only" }));
            Assert.That(sms, Does.Contain("ext").And.Contain("iso"));
        });
    }

    [Test]
    public async Task Server_time_is_now_in_utc()
    {
        var host = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
        var time = (DateTime)XType.Parse("datetime").Coerce(await Client.InvokeAsync("host.get_servertime", host), "t")!;
        Assert.That(time, Is.EqualTo(DateTime.UtcNow).Within(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public async Task Identities_survive_a_restart_of_the_daemon()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-restart-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        string firstHost;
        await using (var first = await TestDaemon.StartAsync(o => o.DataDir = dataDir))
        {
            using var client = await first.LoginAsync();
            firstHost = (string)((IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!)[0]!;
        }
        await using var second = await TestDaemon.StartAsync(o => o.DataDir = dataDir);
        using var again = await second.LoginAsync();
        Assert.That(((IReadOnlyList<object?>)(await again.InvokeAsync("host.get_all"))!)[0], Is.EqualTo(firstHost));
    }
}
