using System.Diagnostics;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

[TestFixtureSource(typeof(Dialects), nameof(Dialects.All))]
public class DispatchTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    private async Task<string> PoolAsync() => (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0]!;

    private async Task<string> TemplateAsync()
    {
        var templates = (IReadOnlyList<object?>)(await Client.InvokeAsync("VM.get_all_where", "field \"is_a_template\"=\"true\""))!;
        return (string)templates[0]!;
    }

    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public async Task Login_takes_two_to_four_parameters(int count)
    {
        using var client = Daemon.Client(Dialect);
        object?[] all = ["root", TestDaemon.Password, "2.21", "test-originator"];
        var session = (string)(await client.CallAsync("session.login_with_password", all[..count]))!;
        Assert.That(session, Does.StartWith("OpaqueRef:"));
        await client.CallAsync("session.logout", [session]);
    }

    [Test]
    public async Task A_wrong_password_fails_after_a_delay_without_blocking_others()
    {
        using var client = Daemon.Client(Dialect);
        var watch = Stopwatch.StartNew();
        var failing = XenApiAssert.FailsAsync(() => client.CallAsync("session.login_with_password", ["root", "wrong"]),
            "SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure");
        var other = await Client.InvokeAsync("pool.get_all");
        var otherElapsed = watch.Elapsed;
        await failing;
        Assert.Multiple(() =>
        {
            Assert.That(other, Is.Not.Empty);
            Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(450)));
            Assert.That(otherElapsed, Is.LessThan(watch.Elapsed), "the other client was answered while the failed login waited");
        });
    }

    [Test]
    public async Task Session_getters_describe_the_caller()
    {
        var session = Client.Session!;
        var host = (string)(await Client.InvokeAsync("session.get_this_host", session))!;
        var master = (string)(await Client.InvokeAsync("pool.get_master", await PoolAsync()))!;
        var permissions = (IReadOnlyList<object?>)(await Client.InvokeAsync("session.get_rbac_permissions", session))!;
        Assert.Multiple(async () =>
        {
            Assert.That(host, Is.EqualTo(master));
            Assert.That(await Client.InvokeAsync("session.get_is_local_superuser", session), Is.EqualTo(true));
            Assert.That(await Client.InvokeAsync("session.get_this_user", session), Is.EqualTo(XType.NullRef));
            // Real hosts keep the local superuser's rbac_permissions empty: it passes every check.
            Assert.That(permissions, Is.Empty);
        });
    }

    [Test]
    public async Task Logged_out_sessions_are_invalid()
    {
        using var client = await Daemon.LoginAsync(Dialect);
        var session = client.Session!;
        await client.LogoutAsync();
        await XenApiAssert.FailsAsync(() => client.CallAsync("pool.get_all", [session]), "SESSION_INVALID", session);
    }

    [Test]
    public async Task Bad_sessions_unknown_methods_and_wrong_arity_get_their_errors()
    {
        await XenApiAssert.FailsAsync(() => Client.CallAsync("pool.get_all", ["OpaqueRef:bogus"]), "SESSION_INVALID", "OpaqueRef:bogus");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.frobnicate"), "MESSAGE_METHOD_UNKNOWN", "VM.frobnicate");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.get_name_label"), "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_name_label", "1", "0");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_name_label", "a", "b", "c"), "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.set_name_label", "2", "3");
    }

    [Test]
    public async Task Missing_objects_and_uuids_are_reported_with_their_class()
    {
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.get_record", "OpaqueRef:nope"), "HANDLE_INVALID", "VM", "OpaqueRef:nope");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("SR.get_by_uuid", "no-such-uuid"), "UUID_INVALID", "SR", "no-such-uuid");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.destroy", "OpaqueRef:nope"), "HANDLE_INVALID", "VM", "OpaqueRef:nope");
    }

    [Test]
    public async Task Wrong_types_and_enum_values_are_field_type_errors()
    {
        var template = await TemplateAsync();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_memory_static_max", template, "lots"), "FIELD_TYPE_ERROR", "value");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_actions_after_crash", template, "explode"), "FIELD_TYPE_ERROR", "value");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_is_a_template", template, new object?[] { 1L }), "FIELD_TYPE_ERROR", "value");
    }

    [Test]
    public async Task Enums_match_any_case_and_come_back_in_datamodel_case()
    {
        var template = await TemplateAsync();
        await Client.InvokeAsync("VM.set_actions_after_crash", template, "COREDUMP_AND_RESTART");
        Assert.That(await Client.InvokeAsync("VM.get_actions_after_crash", template), Is.EqualTo("coredump_and_restart"));
    }

    [Test]
    public async Task Ints_may_arrive_as_strings()
    {
        var template = await TemplateAsync();
        await Client.InvokeAsync("VM.set_VCPUs_max", template, "3");
        var back = await Client.InvokeAsync("VM.get_VCPUs_max", template);
        Assert.That(XType.Parse("int").Coerce(back, "VCPUs_max"), Is.EqualTo(3L));
    }

    [Test]
    public async Task Underscore_method_names_are_accepted()
    {
        var pools = await Client.CallAsync("pool_get_all", [Client.Session]);
        var metrics = await Client.CallAsync("VM_metrics_get_all", [Client.Session]);
        Assert.Multiple(() =>
        {
            Assert.That(pools, Has.Count.EqualTo(1));
            Assert.That(metrics, Is.Not.Empty);
        });
    }

    [Test]
    public async Task System_methods_list_and_echo()
    {
        var methods = (IReadOnlyList<object?>)(await Client.CallAsync("system.listMethods", []))!;
        Assert.Multiple(async () =>
        {
            Assert.That(methods, Does.Contain("VM.start").And.Contain("VM.get_all_records_where").And.Contain("session.login_with_password"));
            Assert.That(methods, Has.Count.GreaterThan(2000));
            Assert.That(await Client.CallAsync("system.isAlive", ["ping"]), Is.EqualTo("ping"));
        });
    }

    [Test]
    public async Task Unimplemented_custom_messages_say_so()
    {
        var template = await TemplateAsync();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.assert_agile", template), "NOT_IMPLEMENTED", "VM.assert_agile");
    }

    [Test]
    public async Task Async_calls_without_an_async_form_are_refused()
    {
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("Async.VM.get_record", "OpaqueRef:x"), "MESSAGE_METHOD_UNKNOWN", "Async.VM.get_record");
    }

    [Test]
    public async Task Map_and_set_edits_follow_datamodel_rules()
    {
        var template = await TemplateAsync();
        await Client.InvokeAsync("VM.add_to_other_config", template, "dialect-key", "1");
        var uuid = (string)(await Client.InvokeAsync("VM.get_uuid", template))!;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.add_to_other_config", template, "dialect-key", "2"),
            "MAP_DUPLICATE_KEY", "VM", "other_config", uuid, "dialect-key");
        await Client.InvokeAsync("VM.remove_from_other_config", template, "dialect-key");
        await Client.InvokeAsync("VM.remove_from_other_config", template, "dialect-key");
        var config = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("VM.get_other_config", template))!;
        Assert.That(config.ContainsKey("dialect-key"), Is.False);
    }

    [Test]
    public async Task Records_are_filtered_by_where_expressions()
    {
        var templates = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("VM.get_all_records_where", "field \"is_a_template\"=\"true\""))!;
        var others = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("VM.get_all_records_where", "not (field \"is_a_template\"=\"true\")"))!;
        Assert.Multiple(async () =>
        {
            Assert.That(templates, Has.Count.GreaterThanOrEqualTo(5));
            Assert.That(templates.Values.Cast<IReadOnlyDictionary<string, object?>>().Select(r => r["is_a_template"]), Is.All.EqualTo(true));
            Assert.That(others.Values.Cast<IReadOnlyDictionary<string, object?>>().Select(r => r["is_control_domain"]), Does.Contain(true));
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.get_all_records_where", "field \"x\"="), "INVALID_VALUE");
        });
    }

    [Test]
    public async Task Implicit_create_checks_mandatory_fields()
    {
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("network.create", new Dictionary<string, object?> { ["name_label"] = "n" }), "FIELD_TYPE_ERROR");
    }
}
