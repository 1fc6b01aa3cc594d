using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Tests;

/// <summary>
/// A reference a client writes names an existing object of its class, or is OpaqueRef:NULL
/// where the field allows it; otherwise HANDLE_INVALID [class, ref] and nothing is written.
/// </summary>
[TestFixtureSource(nameof(Protocols))]
public class ReferenceIntegrityTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    public static readonly RpcDialect[] Protocols = [RpcDialect.XmlRpc, RpcDialect.JsonRpcV2];

    private static string UnknownRef() => $"OpaqueRef:{Guid.NewGuid()}";

    private async Task<string> InsertAsync(string className) => (await Daemon.InsertAsync(ApiSchema.Class(className))).Ref;

    // VDI.create goes to the SR's driver: it needs an SR plugged on this host, such as first boot's local SR.
    private async Task<string> PluggedSrAsync() =>
        (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("SR.get_by_name_label", "Local storage"))!)[0]!;

    private async Task<string> VmAsync() => (string)(await Client.InvokeAsync("VM.create", ApiSchema.Class("VM").MinimalRecord()))!;

    private async Task<int> CountAsync(string className) => ((IReadOnlyList<object?>)(await Client.InvokeAsync($"{className}.get_all"))!).Count;

    private async Task<object?> FieldAsync(string className, string reference, string field) =>
        ((IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{className}.get_record", reference))!)[field];

    private static Dictionary<string, object?> VdiRecord(string sr)
    {
        var record = ApiSchema.Class("VDI").MinimalRecord();
        record["name_label"] = "disk";
        record["SR"] = sr;
        return record;
    }

    private static Dictionary<string, object?> VbdRecord(string vm, string vdi, bool empty)
    {
        var record = ApiSchema.Class("VBD").MinimalRecord();
        record["VM"] = vm;
        record["VDI"] = vdi;
        record["empty"] = empty;
        record["type"] = empty ? "CD" : "Disk";
        record["mode"] = empty ? "RO" : "RW";
        record["userdevice"] = empty ? "3" : "0";
        return record;
    }

    [Test]
    public async Task VDI_create_with_a_null_SR_is_refused_and_creates_nothing()
    {
        var before = await CountAsync("VDI");
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VDI.create", VdiRecord(XType.NullRef)), "HANDLE_INVALID", "SR", XType.NullRef);
        Assert.That(await CountAsync("VDI"), Is.EqualTo(before));
    }

    [Test]
    public async Task VDI_create_with_an_unknown_SR_is_refused_and_creates_nothing()
    {
        var before = await CountAsync("VDI");
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VDI.create", VdiRecord(unknown)), "HANDLE_INVALID", "SR", unknown);
        Assert.That(await CountAsync("VDI"), Is.EqualTo(before));
    }

    [Test]
    public async Task VDI_create_in_an_existing_SR_succeeds()
    {
        var sr = await PluggedSrAsync();
        var vdi = (string)(await Client.InvokeAsync("VDI.create", VdiRecord(sr)))!;
        Assert.That(await FieldAsync("VDI", vdi, "SR"), Is.EqualTo(sr));
    }

    [Test]
    public async Task A_disk_VBD_with_a_null_or_unknown_VDI_is_refused_and_creates_nothing()
    {
        var vm = await VmAsync();
        var before = await CountAsync("VBD");
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.create", VbdRecord(vm, XType.NullRef, empty: false)), "HANDLE_INVALID", "VDI", XType.NullRef);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.create", VbdRecord(vm, unknown, empty: false)), "HANDLE_INVALID", "VDI", unknown);
        Assert.That(await CountAsync("VBD"), Is.EqualTo(before));
    }

    [Test]
    public async Task A_VBD_of_an_unknown_VM_is_refused()
    {
        var sr = await PluggedSrAsync();
        var vdi = (string)(await Client.InvokeAsync("VDI.create", VdiRecord(sr)))!;
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.create", VbdRecord(unknown, vdi, empty: false)), "HANDLE_INVALID", "VM", unknown);
    }

    [Test]
    public async Task An_empty_CD_drive_with_a_null_VDI_is_created()
    {
        var vm = await VmAsync();
        var vbd = (string)(await Client.InvokeAsync("VBD.create", VbdRecord(vm, XType.NullRef, empty: true)))!;
        Assert.Multiple(async () =>
        {
            Assert.That(await FieldAsync("VBD", vbd, "VDI"), Is.EqualTo(XType.NullRef));
            Assert.That(await FieldAsync("VBD", vbd, "empty"), Is.EqualTo(true));
        });
    }

    [Test]
    public async Task An_empty_CD_drive_with_an_unknown_VDI_is_refused()
    {
        var vm = await VmAsync();
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VBD.create", VbdRecord(vm, unknown, empty: true)), "HANDLE_INVALID", "VDI", unknown);
    }

    [Test]
    public async Task A_disk_VBD_of_an_existing_VDI_is_created()
    {
        var vm = await VmAsync();
        var sr = await PluggedSrAsync();
        var vdi = (string)(await Client.InvokeAsync("VDI.create", VdiRecord(sr)))!;
        var vbd = (string)(await Client.InvokeAsync("VBD.create", VbdRecord(vm, vdi, empty: false)))!;
        Assert.That(await FieldAsync("VBD", vbd, "VDI"), Is.EqualTo(vdi));
    }

    [Test]
    public async Task Setting_an_affinity_to_an_unknown_host_is_refused_but_null_and_real_hosts_are_kept()
    {
        var vm = await VmAsync();
        var host = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
        var unknown = UnknownRef();
        await Client.InvokeAsync("VM.set_affinity", vm, host);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("VM.set_affinity", vm, unknown), "HANDLE_INVALID", "host", unknown);
        Assert.That(await FieldAsync("VM", vm, "affinity"), Is.EqualTo(host), "the refused write changed nothing");
        await Client.InvokeAsync("VM.set_affinity", vm, XType.NullRef);
        Assert.That(await FieldAsync("VM", vm, "affinity"), Is.EqualTo(XType.NullRef));
    }

    [Test]
    public async Task The_pool_default_SR_takes_an_existing_SR_or_null_but_not_an_unknown_one()
    {
        var pool = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("pool.get_all"))!)[0]!;
        var sr = await InsertAsync("SR");
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("pool.set_default_SR", pool, unknown), "HANDLE_INVALID", "SR", unknown);
        await Client.InvokeAsync("pool.set_default_SR", pool, sr);
        Assert.That(await FieldAsync("pool", pool, "default_SR"), Is.EqualTo(sr));
        await Client.InvokeAsync("pool.set_default_SR", pool, XType.NullRef);
        Assert.That(await FieldAsync("pool", pool, "default_SR"), Is.EqualTo(XType.NullRef));
    }

    [Test]
    public async Task Adding_an_unknown_reference_to_a_set_is_refused()
    {
        var pgpu = await InsertAsync("PGPU");
        var type = await InsertAsync("VGPU_type");
        var unknown = UnknownRef();
        await Client.InvokeAsync("PGPU.add_enabled_VGPU_types", pgpu, type);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("PGPU.add_enabled_VGPU_types", pgpu, unknown), "HANDLE_INVALID", "VGPU_type", unknown);
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("PGPU.add_enabled_VGPU_types", pgpu, XType.NullRef), "HANDLE_INVALID", "VGPU_type", XType.NullRef);
        Assert.That(await FieldAsync("PGPU", pgpu, "enabled_VGPU_types"), Is.EqualTo(new object?[] { type }));
    }

    [Test]
    public async Task Observer_hosts_must_exist_and_are_refused_as_the_real_server_refuses_them()
    {
        var unknown = UnknownRef();
        var record = ApiSchema.Class("Observer").MinimalRecord();
        record["name_label"] = "trace";
        record["hosts"] = new object?[] { unknown };
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("Observer.create", record), "INVALID_VALUE", "host", unknown);
    }

    [Test]
    public async Task PVS_cache_storage_needs_a_real_SR_as_the_real_server_checks_it()
    {
        var record = ApiSchema.Class("PVS_cache_storage").MinimalRecord();
        record["host"] = (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
        record["site"] = await InsertAsync("PVS_site");
        record["SR"] = XType.NullRef;
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync("PVS_cache_storage.create", record), "INVALID_VALUE", "SR", XType.NullRef);
    }

    [TestCase("host.get_servertime")]
    [TestCase("host.get_server_localtime")]
    public async Task The_time_of_a_host_that_does_not_exist_is_refused(string message)
    {
        var unknown = UnknownRef();
        await XenApiAssert.FailsAsync(() => Client.InvokeAsync(message, unknown), "HANDLE_INVALID", "host", unknown);
    }

    /// <summary>
    /// Every implicit write path of every class that takes a reference — create's record fields,
    /// setters, set and map additions — walked from the metadata: an unknown reference is
    /// refused and leaves nothing behind.
    /// </summary>
    [Test]
    public async Task Every_implicit_write_path_of_every_class_refuses_an_unknown_reference()
    {
        var dispatcher = Daemon.Service<Dispatcher>();
        var exercised = new List<string>();
        foreach (var message in ApiSchema.Classes.SelectMany(c => c.Messages))
        {
            if (message.Lifecycle == Lifecycle.Removed
                || dispatcher.Coverage(message) is not (MessageCoverage.Implicit or MessageCoverage.PlainAccessor))
            {
                continue;
            }
            switch (message.Implicit)
            {
                case ImplicitKind.Create:
                    foreach (var field in ConstructorFields(message.Owner).Where(f => HoldsRefs(f.Type)))
                    {
                        await CreateRefusesAsync(message, field);
                        exercised.Add($"{message.WireName}({field.Name})");
                    }
                    break;
                case ImplicitKind.Set or ImplicitKind.Add or ImplicitKind.AddTo when HoldsRefs(message.ImplicitField!.Type):
                    await WriteRefusesAsync(message);
                    exercised.Add(message.WireName);
                    break;
            }
        }
        TestContext.Out.WriteLine($"{exercised.Count} write paths: {string.Join(", ", exercised)}");
        Assert.That(exercised, Does.Contain("PVS_cache_storage.create(SR)").And.Contain("VM.set_affinity")
            .And.Contain("PGPU.add_enabled_VGPU_types"));
    }

    private static IEnumerable<FieldMeta> ConstructorFields(ClassMeta cls) =>
        cls.Fields.Where(f => f.IsConstructorArgument && f.ManyOf is null && f != cls.UuidField);

    private static bool HoldsRefs(XType type) =>
        type.Kind == XTypeKind.Ref || (type.Element is { } e && HoldsRefs(e)) || (type.Key is { } k && HoldsRefs(k));

    // A value of the type whose references all name existing objects.
    private async Task<object?> ValidAsync(XType type, int variant)
    {
        switch (type.Kind)
        {
            case XTypeKind.Ref:
                return (await Daemon.InsertAsync(ApiSchema.Class(type.Name!))).Ref;
            case XTypeKind.Set:
                return new object?[] { await ValidAsync(type.Element!, variant) };
            case XTypeKind.Map:
                return ValueMap.FromPairs([new((await ValidAsync(type.Key!, variant))!, await ValidAsync(type.Element!, variant))]);
            case XTypeKind.Option:
                return await ValidAsync(type.Element!, variant);
            default:
                return RoundTripTests.Sample(type, variant);
        }
    }

    // The same shape with every reference unknown.
    private static object? WithUnknownRefs(XType type, object? valid, string unknown) => type.Kind switch
    {
        XTypeKind.Ref => unknown,
        XTypeKind.Set => new object?[] { WithUnknownRefs(type.Element!, ((IReadOnlyList<object?>)valid!)[0], unknown) },
        XTypeKind.Map => ValueMap.FromPairs([.. ((ValueMap)valid!).Select(kv =>
            new KeyValuePair<object, object?>(WithUnknownRefs(type.Key!, kv.Key, unknown)!, WithUnknownRefs(type.Element!, kv.Value, unknown)))]),
        XTypeKind.Option => WithUnknownRefs(type.Element!, valid, unknown),
        _ => valid,
    };

    // Where the real server checks these references itself, it answers INVALID_VALUE [name, ref]
    // (xapi_observer.ml assert_valid_hosts, xapi_pvs_cache_storage.ml create).
    private static readonly Dictionary<string, string> RefusedAsInvalidValue = new()
    {
        ["Observer.hosts"] = "host",
        ["PVS_cache_storage.host"] = "host",
        ["PVS_cache_storage.SR"] = "SR",
        ["PVS_cache_storage.site"] = "site",
    };

    private static async Task<XenApiException> RefusedAsync(Func<Task> call, string what)
    {
        try
        {
            await call();
        }
        catch (XenApiException e)
        {
            return e;
        }
        Assert.Fail($"{what} with an unknown reference succeeded");
        throw new InvalidOperationException();
    }

    private static void AssertRefusal(XenApiException e, FieldMeta field, string unknown)
    {
        var name = $"{field.Owner.Name}.{field.Name}";
        var expected = RefusedAsInvalidValue.TryGetValue(name, out var parameter)
            ? new[] { "INVALID_VALUE", parameter, unknown }
            : ["HANDLE_INVALID", RefTarget(field.Type), unknown];
        Assert.That(e.Description, Is.EqualTo(expected), name);
    }

    private static string RefTarget(XType type) => type.Kind == XTypeKind.Ref ? type.Name! : RefTarget(type.Key is { } k && HoldsRefs(k) ? k : type.Element!);

    private async Task CreateRefusesAsync(MessageMeta create, FieldMeta field)
    {
        var cls = create.Owner;
        var record = new Dictionary<string, object?>();
        foreach (var f in ConstructorFields(cls))
        {
            record[f.Name] = await ValidAsync(f.Type, 1);
        }
        var unknown = UnknownRef();
        var bad = new Dictionary<string, object?>(record) { [field.Name] = WithUnknownRefs(field.Type, record[field.Name], unknown) };
        var before = await CountAsync(cls.Name);
        var e = await RefusedAsync(() => Client.InvokeAsync(create.WireName, bad), $"{create.WireName}({field.Name})");
        AssertRefusal(e, field, unknown);
        Assert.That(await CountAsync(cls.Name), Is.EqualTo(before), $"{create.WireName} with an unknown {field.Name} created nothing");
        // The same record with every reference real is accepted: the refusal was the reference's.
        await Client.InvokeAsync(create.WireName, record);
        if (field.Type.Kind == XTypeKind.Ref)
        {
            var withNull = new Dictionary<string, object?>(record) { [field.Name] = XType.NullRef };
            var allowed = field.References!.NullAllowed || (field.References.NullAllowedWhen is { } when && record[when] is true);
            await NullAsync(() => Client.InvokeAsync(create.WireName, withNull), field, allowed);
        }
    }

    // OpaqueRef:NULL is kept exactly where the field's generated rule allows it.
    private static async Task NullAsync(Func<Task> call, FieldMeta field, bool allowed)
    {
        if (allowed)
        {
            await call();
            return;
        }
        var e = await RefusedAsync(call, $"{field.Owner.Name}.{field.Name} = NULL");
        AssertRefusal(e, field, XType.NullRef);
    }

    private async Task WriteRefusesAsync(MessageMeta message)
    {
        var field = message.ImplicitField!;
        var owner = (await Daemon.InsertAsync(message.Owner)).Ref;
        var unknown = UnknownRef();
        // The value parameters: the whole value for a setter, an item for a set, key and value for a map.
        XType[] types = message.Implicit switch
        {
            ImplicitKind.Set => [field.Type],
            ImplicitKind.Add => [field.Type.Element!],
            _ => [field.Type.Key!, field.Type.Element!],
        };
        var valid = new List<object?> { owner };
        foreach (var type in types)
        {
            valid.Add(await ValidAsync(type, 2));
        }
        var args = valid.Select((v, i) => i == 0 ? v : WithUnknownRefs(types[i - 1], v, unknown)).ToArray();
        var before = await FieldAsync(message.Owner.Name, owner, field.Name);
        var e = await RefusedAsync(() => Client.InvokeAsync(message.WireName, args), message.WireName);
        AssertRefusal(e, field, unknown);
        Assert.That(ValueEquality.DeepEquals(field.Type.Coerce(await FieldAsync(message.Owner.Name, owner, field.Name), field.Name),
            field.Type.Coerce(before, field.Name)), Is.True, $"{message.WireName} with an unknown reference changed nothing");
        // The same call with real references is accepted: the refusal was the reference's.
        await Client.InvokeAsync(message.WireName, [.. valid]);
        if (message.Implicit == ImplicitKind.Set && field.Type.Kind == XTypeKind.Ref)
        {
            await NullAsync(() => Client.InvokeAsync(message.WireName, owner, XType.NullRef), field, field.References!.NullAllowed);
        }
    }
}
