using Xapi.Server.Tests.Api.VM;

namespace Xapi.Server.Tests.Cli;

/// <summary>The generated per-class commands: lists, filters, param-list/-get/-set/-add/-remove/-clear, printed as real xe prints records.</summary>
[TestFixture]
public sealed class RecordsTests : XeFixture
{
    private async Task<(string Ref, string Uuid)> VmAsync(string name)
    {
        var vm = await Client.CreateVmAsync(name, withDevices: false);
        return (vm, (string)(await Client.InvokeAsync("VM.get_uuid", vm))!);
    }

    private async Task<IReadOnlyDictionary<string, object?>> OtherConfigAsync(string vm) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync("VM.get_other_config", vm))!;

    [Test]
    public async Task Vm_list_filtered_by_name_prints_uuid_name_and_power_state_aligned_with_two_empty_lines()
    {
        var (_, uuid) = await VmAsync("records-list-one");

        var output = await XeOkAsync("vm-list", "name-label=records-list-one");

        Assert.That(output, Is.EqualTo(
            $"uuid ( RO)           : {uuid}\n" +
            "     name-label ( RW): records-list-one\n" +
            "    power-state ( RO): halted\n\n\n"));
    }

    [Test]
    public async Task Vm_list_minimal_is_one_line_of_uuids_and_params_picks_the_first_printed_column()
    {
        var (_, a) = await VmAsync("records-minimal");
        var (_, b) = await VmAsync("records-minimal");

        var uuids = await XeOkAsync("vm-list", "name-label=records-minimal", "--minimal");
        var names = await XeOkAsync("vm-list", "name-label=records-minimal", "params=power-state,name-label", "--minimal");
        var none = await XeOkAsync("vm-list", "name-label=nothing-has-this-name", "--minimal");

        Assert.That(uuids.TrimEnd('\n').Split(','), Is.EquivalentTo(new[] { a, b }));
        Assert.That(uuids.Count(c => c == '\n'), Is.EqualTo(1));
        Assert.That(names, Is.EqualTo("records-minimal,records-minimal\n"));
        Assert.That(none, Is.EqualTo("\n"));
    }

    [Test]
    public async Task Params_keeps_record_order_not_the_order_asked_for()
    {
        var (_, uuid) = await VmAsync("records-params");

        var output = await XeOkAsync("vm-list", $"uuid={uuid}", "params=power-state,name-label,no-such-field");

        Assert.That(output, Is.EqualTo("name-label ( RW)     : records-params\n    power-state ( RO): halted\n\n\n"));
    }

    [Test]
    public async Task Vm_list_filters_on_map_keys_and_set_members_and_excludes_templates()
    {
        var (vm, uuid) = await VmAsync("records-filters");
        await Client.InvokeAsync("VM.add_to_other_config", vm, "purpose", "filter-test");
        await Client.InvokeAsync("VM.add_tags", vm, "blue");

        var byMap = await XeOkAsync("vm-list", "other-config:purpose=filter-test", "--minimal");
        var byTag = await XeOkAsync("vm-list", "tags:contains=blue", "--minimal");
        var templates = await XeOkAsync("vm-list", "is-a-template=true", "--minimal");

        Assert.That(byMap, Is.EqualTo(uuid + "\n"));
        Assert.That(byTag, Is.EqualTo(uuid + "\n"));
        Assert.That(templates, Is.EqualTo("\n"));
    }

    [Test]
    public async Task Vm_param_list_aligns_every_field_and_marks_its_qualifier()
    {
        var (vm, uuid) = await VmAsync("records-param-list");
        await Client.InvokeAsync("VM.add_tags", vm, "a");
        await Client.InvokeAsync("VM.add_tags", vm, "b");

        var lines = (await XeOkAsync("vm-param-list", $"uuid={uuid}")).Split('\n');

        var width = lines[0].IndexOf(':', StringComparison.Ordinal);
        Assert.That(lines[0], Is.EqualTo("uuid ( RO)".PadRight(width) + ": " + uuid));
        Assert.That(lines, Does.Contain("name-label ( RW)".PadLeft(width) + ": records-param-list"));
        Assert.That(lines, Does.Contain("power-state ( RO)".PadLeft(width) + ": halted"));
        Assert.That(lines, Does.Contain("tags (SRW)".PadLeft(width) + ": a, b"));
        Assert.That(lines.Any(l => l.StartsWith("other-config (MRW)".PadLeft(width) + ": ", StringComparison.Ordinal)), string.Join("\n", lines));
        Assert.That(lines.Any(l => l.StartsWith("allowed-operations (SRO)".PadLeft(width) + ": ", StringComparison.Ordinal)), string.Join("\n", lines));
        Assert.That(lines.Where(l => l.Length > 0).All(l => l.IndexOf(": ", StringComparison.Ordinal) == width), string.Join("\n", lines));
        Assert.That(lines[^3..], Is.EqualTo(new[] { "", "", "" }));
    }

    [Test]
    public async Task Param_get_of_a_map_key_prints_just_that_value()
    {
        var (vm, uuid) = await VmAsync("records-get");
        await Client.InvokeAsync("VM.add_to_other_config", vm, "colour", "green");

        var value = await XeOkAsync("vm-param-get", $"uuid={uuid}", "param-name=other-config", "param-key=colour");
        var missing = await XeAsync("vm-param-get", $"uuid={uuid}", "param-name=other-config", "param-key=nope");

        Assert.That(value, Is.EqualTo("green\n"));
        Assert.That((missing.ExitCode, missing.Stderr), Is.EqualTo((1, "Error: Key nope not found in map\n")));
    }

    [Test]
    public async Task Param_set_changes_a_field_and_a_map_key()
    {
        var (vm, uuid) = await VmAsync("records-set");
        await Client.InvokeAsync("VM.add_to_other_config", vm, "k", "old");

        var output = await XeOkAsync("vm-param-set", $"uuid={uuid}", "name-description=set by xe", "other-config:k=new", "other-config:added=1");

        Assert.That(output, Is.Empty);
        Assert.That(await Client.InvokeAsync("VM.get_name_description", vm), Is.EqualTo("set by xe"));
        var config = await OtherConfigAsync(vm);
        Assert.That((config["k"], config["added"]), Is.EqualTo(("new", "1")));
    }

    [Test]
    public async Task Param_add_remove_and_clear_work_on_other_config_and_tags()
    {
        var (vm, uuid) = await VmAsync("records-add");

        await XeOkAsync("vm-param-add", $"uuid={uuid}", "param-name=other-config", "x=1", "y=2");
        await XeOkAsync("vm-param-add", $"uuid={uuid}", "param-name=tags", "param-key=red");
        await XeOkAsync("vm-param-add", $"uuid={uuid}", "param-name=tags", "param-key=green");
        Assert.That((await OtherConfigAsync(vm)).Keys, Is.SupersetOf(new[] { "x", "y" }));
        Assert.That(await Client.InvokeAsync("VM.get_tags", vm), Is.EquivalentTo(new[] { "red", "green" }));

        await XeOkAsync("vm-param-remove", $"uuid={uuid}", "param-name=other-config", "param-key=x");
        await XeOkAsync("vm-param-remove", $"uuid={uuid}", "param-name=tags", "param-key=red");
        var notThere = await XeAsync("vm-param-remove", $"uuid={uuid}", "param-name=tags", "param-key=red");
        Assert.That((await OtherConfigAsync(vm)).Keys, Does.Not.Contain("x").And.Contain("y"));
        Assert.That(await Client.InvokeAsync("VM.get_tags", vm), Is.EquivalentTo(new[] { "green" }));
        Assert.That((notThere.ExitCode, notThere.Stderr), Is.EqualTo((1, "Error: Key red is not in the set\n")));

        await XeOkAsync("vm-param-clear", $"uuid={uuid}", "param-name=other-config");
        await XeOkAsync("vm-param-clear", $"uuid={uuid}", "param-name=tags");
        Assert.That(await OtherConfigAsync(vm), Is.Empty);
        Assert.That(await Client.InvokeAsync("VM.get_tags", vm), Is.Empty);
    }

    [Test]
    public async Task Host_and_pool_lists_print_their_default_columns()
    {
        var host = await HostAsync();
        var hostUuid = (string)(await Client.InvokeAsync("host.get_uuid", host))!;
        var hostName = (string)(await Client.InvokeAsync("host.get_name_label", host))!;

        var hosts = await XeOkAsync("host-list");
        var pools = await XeOkAsync("pool-list");

        Assert.That(hosts, Does.StartWith($"uuid ( RO)                : {hostUuid}\n          name-label ( RW): {hostName}\n    name-description ( RW): "));
        // Widest key "name-description ( RW)" (22): every other key is right-aligned to 26.
        Assert.That(pools, Does.Contain("\n" + "master ( RO)".PadLeft(26) + $": {hostUuid}\n"));
        Assert.That(pools, Does.Contain("default-SR ( RW): "));
    }

    [Test]
    public async Task Host_param_list_shows_references_as_uuids()
    {
        var host = await HostAsync();
        var hostUuid = (string)(await Client.InvokeAsync("host.get_uuid", host))!;

        var output = await XeOkAsync("host-param-list", $"uuid={hostUuid}");

        Assert.That(output, Does.StartWith("uuid ( RO)"));
        Assert.That(output, Does.Not.Contain("OpaqueRef:"));
        Assert.That(output, Does.Match(@"resident-vms \(SRO\): [0-9a-f-]{36}"));
    }

    [Test]
    public async Task Network_task_and_message_lists_print_records()
    {
        await VmAsync("records-lists");
        await Client.InvokeAsync("message.create", "records-test", 3L, "VM", (string)(await Client.InvokeAsync("VM.get_uuid", (await VmAsync("records-msg")).Ref))!, "body text");
        var task = (string)(await Client.InvokeAsync("task.create", "records-task", "a task"))!;

        var networks = await XeOkAsync("network-list");
        var tasks = await XeOkAsync("task-list", "name-label=records-task");
        var messages = await XeOkAsync("message-list", "name=records-test");

        Assert.That(networks, Does.Match(@"^uuid \( RO\)\s+: [0-9a-f-]{36}\n\s+name-label \( RW\): .+\n\s+name-description \( RW\): .*\n\s+bridge \( RO\): \S+\n\n\n"));
        Assert.That(tasks, Does.Contain("name-label ( RO): records-task\n").And.Contain("status ( RO): pending\n"));
        Assert.That(tasks, Does.Contain("progress ( RO): 0.000\n"));
        Assert.That(messages, Does.Contain("name ( RO): records-test\n").And.Contain("body ( RO): body text\n").And.Contain("class ( RO): VM\n"));
        Assert.That(task, Does.StartWith("OpaqueRef:"));
    }
}
