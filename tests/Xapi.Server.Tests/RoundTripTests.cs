using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

/// <summary>
/// For every class of the datamodel, driven by its generated metadata: create (or insert),
/// get_record against defaults and types, every setter, map and set edits, lookups, destroy.
/// </summary>
[TestFixtureSource(nameof(Protocols))]
public class RoundTripTests(RpcDialect dialect) : LoggedInFixture(dialect)
{
    public static readonly RpcDialect[] Protocols = [RpcDialect.XmlRpc, RpcDialect.JsonRpcV2];

    public static IEnumerable<string> ClassNames => ApiSchema.Classes.Select(c => c.Name);

    [TestCaseSource(nameof(ClassNames))]
    public async Task Every_generic_message_round_trips(string className)
    {
        var cls = ApiSchema.Class(className);
        if (!cls.IsStored)
        {
            await AssertKnownWithoutRecordsAsync(cls);
            return;
        }

        if (cls.MessagesByName.TryGetValue("get_record", out var getRecord) && getRecord.Lifecycle == Lifecycle.Removed)
        {
            // The class is gone from the API: its row may exist but every removed message says so.
            var row = await Daemon.InsertAsync(cls);
            foreach (var message in cls.Messages.Where(m => m.Lifecycle == Lifecycle.Removed))
            {
                var args = Enumerable.Repeat<object?>(row.Ref, message.MinimumArity).ToArray();
                await XenApiAssert.FailsAsync(() => Client.InvokeAsync(message.WireName, args), "MESSAGE_REMOVED");
            }
            return;
        }

        var (reference, expected) = await CreateAsync(cls);
        await AssertRecordAsync(cls, reference, expected);

        foreach (var message in cls.Messages)
        {
            if (message.Lifecycle == Lifecycle.Removed)
            {
                var args = Enumerable.Repeat<object?>(reference, message.MinimumArity).ToArray();
                await XenApiAssert.FailsAsync(() => Client.InvokeAsync(message.WireName, args), "MESSAGE_REMOVED");
                continue;
            }
            switch (message.Implicit)
            {
                // An accessor with the real server's checks (SR.set_physical_size is for storage drivers only,
                // VM.add_to_blocked_operations recomputes allowed_operations) is tested where it is implemented.
                case ImplicitKind.Set when !ImplementedByHand(message):
                    await SetAsync(cls, message, reference, expected);
                    break;
                case ImplicitKind.AddTo when !ImplementedByHand(message):
                    await MapEditAsync(cls, message, reference);
                    break;
                case ImplicitKind.Add when !ImplementedByHand(message):
                    await SetEditAsync(cls, message, reference);
                    break;
            }
        }
        await AssertRecordAsync(cls, reference, expected);
        await LookupsAsync(cls, reference, expected);

        // Classes whose create and destroy reach storage have tests of their own (Api/Storage), and
        // so have those whose destroy the operation table decides (a VM sampled as Paused may not go).
        if (cls.MessagesByName.TryGetValue("destroy", out var destroy) && destroy.Implicit == ImplicitKind.Destroy && !ImplementedByHand(destroy)
            && !DestroyHasRules(cls))
        {
            await Client.InvokeAsync($"{cls.Name}.destroy", reference);
            await XenApiAssert.FailsAsync(() => Client.InvokeAsync($"{cls.Name}.get_record", reference), "HANDLE_INVALID", cls.Name, reference);
        }
    }

    private async Task<(string Ref, Dictionary<string, object?> Expected)> CreateAsync(ClassMeta cls)
    {
        var expected = cls.Fields.ToDictionary(f => f.Name, f => f.ManyOf is null ? f.DefaultValue : ValueSet.Empty);
        if (cls.MessagesByName.TryGetValue("create", out var create) && create.Implicit == ImplicitKind.Create && !ImplementedByHand(create))
        {
            var record = new Dictionary<string, object?>();
            foreach (var field in cls.Fields.Where(f => f.IsConstructorArgument && f.ManyOf is null && f.Name != "uuid"))
            {
                record[field.Name] = expected[field.Name] = await SampleAsync(field.Type, 1);
            }
            var created = (string)(await Client.InvokeAsync($"{cls.Name}.create", record))!;
            Assert.That(created, Does.StartWith("OpaqueRef:"));
            return (created, expected);
        }
        var row = await Daemon.InsertAsync(cls);
        return (row.Ref, expected);
    }

    private bool DestroyHasRules(ClassMeta cls) =>
        cls.AllowedOperationsField is not null && OperationGuard.Tracks(cls, "destroy") && Daemon.Service<AllowedOperationsRules>().For(cls) is IOperationRule;

    private bool ImplementedByHand(MessageMeta message) => Daemon.Service<Xapi.Server.Dispatch.Dispatcher>().Coverage(message) == Xapi.Server.Dispatch.MessageCoverage.Implemented;

    private async Task<IReadOnlyDictionary<string, object?>> RecordAsync(ClassMeta cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls.Name}.get_record", reference))!;

    private async Task AssertRecordAsync(ClassMeta cls, string reference, Dictionary<string, object?> expected)
    {
        var record = await RecordAsync(cls, reference);
        Assert.That(record.Keys, Is.EquivalentTo(cls.Fields.Select(f => f.Name)), $"{cls.Name} record fields");
        foreach (var field in cls.Fields)
        {
            var actual = field.Type.Coerce(record[field.Name], field.Name);
            if (field.Name == "uuid")
            {
                expected["uuid"] = actual;
                Assert.That(Guid.TryParse((string)actual!, out _), Is.True, "uuid");
                continue;
            }
            Assert.That(ValueEquality.DeepEquals(actual, expected[field.Name]), Is.True,
                $"{cls.Name}.{field.Name}: got {XType.ToDisplayString(actual)}, expected {XType.ToDisplayString(expected[field.Name])}");
        }
    }

    private async Task SetAsync(ClassMeta cls, MessageMeta message, string reference, Dictionary<string, object?> expected)
    {
        var field = message.ImplicitField!;
        var value = await SampleAsync(field.Type, 2);
        if (ValueEquality.DeepEquals(value, expected[field.Name]))
        {
            value = await SampleAsync(field.Type, 3);
        }
        await Client.InvokeAsync(message.WireName, reference, value);
        expected[field.Name] = value;
        var read = cls.MessagesByName.TryGetValue("get_" + field.Name, out var getter) && getter.Implicit == ImplicitKind.Get
            ? await Client.InvokeAsync(getter.WireName, reference)
            : (await RecordAsync(cls, reference))[field.Name];
        Assert.That(ValueEquality.DeepEquals(field.Type.Coerce(read, field.Name), value), Is.True, $"{message.WireName} then read back");
    }

    private async Task MapEditAsync(ClassMeta cls, MessageMeta addTo, string reference)
    {
        var field = addTo.ImplicitField!;
        var key = (await SampleAsync(field.Type.Key!, 7))!;
        var value = await SampleAsync(field.Type.Element!, 7);
        await Client.InvokeAsync(addTo.WireName, reference, key, value);
        var map = (ValueMap)field.Type.Coerce((await RecordAsync(cls, reference))[field.Name], field.Name)!;
        Assert.That(map.TryGetValue(key, out var stored) && ValueEquality.DeepEquals(stored, value), Is.True, $"{addTo.WireName} adds the pair");
        var e = await XenApiAssert.FailsAsync(() => Client.InvokeAsync(addTo.WireName, reference, key, value), "MAP_DUPLICATE_KEY");
        Assert.That(e.Parameters.Take(2), Is.EqualTo(new[] { cls.Name, field.Name }));
        await Client.InvokeAsync($"{cls.Name}.remove_from_{field.Name}", reference, key);
        map = (ValueMap)field.Type.Coerce((await RecordAsync(cls, reference))[field.Name], field.Name)!;
        Assert.That(map.ContainsKey(key), Is.False, $"remove_from_{field.Name} removes the key");
    }

    private async Task SetEditAsync(ClassMeta cls, MessageMeta add, string reference)
    {
        var field = add.ImplicitField!;
        var item = await SampleAsync(field.Type.Element!, 7);
        await Client.InvokeAsync(add.WireName, reference, item);
        var set = (IReadOnlyList<object?>)field.Type.Coerce((await RecordAsync(cls, reference))[field.Name], field.Name)!;
        Assert.That(set.Any(v => ValueEquality.DeepEquals(v, item)), Is.True, $"{add.WireName} adds the item");
        await Client.InvokeAsync($"{cls.Name}.remove_{field.Name}", reference, item);
        set = (IReadOnlyList<object?>)field.Type.Coerce((await RecordAsync(cls, reference))[field.Name], field.Name)!;
        Assert.That(set.Any(v => ValueEquality.DeepEquals(v, item)), Is.False, $"remove_{field.Name} removes the item");
    }

    private async Task LookupsAsync(ClassMeta cls, string reference, Dictionary<string, object?> expected)
    {
        if (cls.MessagesByName.ContainsKey("get_by_uuid"))
        {
            Assert.That(await Client.InvokeAsync($"{cls.Name}.get_by_uuid", expected["uuid"]), Is.EqualTo(reference));
        }
        if (cls.MessagesByName.ContainsKey("get_by_name_label"))
        {
            var found = (IReadOnlyList<object?>)(await Client.InvokeAsync($"{cls.Name}.get_by_name_label", expected["name_label"]))!;
            Assert.That(found, Does.Contain(reference));
        }
        if (cls.MessagesByName.ContainsKey("get_all"))
        {
            Assert.That((IReadOnlyList<object?>)(await Client.InvokeAsync($"{cls.Name}.get_all"))!, Does.Contain(reference));
        }
        if (cls.MessagesByName.ContainsKey("get_all_records"))
        {
            var all = (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls.Name}.get_all_records"))!;
            Assert.That(all.Keys, Does.Contain(reference));
        }
    }

    private async Task AssertKnownWithoutRecordsAsync(ClassMeta cls)
    {
        Assert.That(cls.Messages.Where(m => m.Implicit is ImplicitKind.GetRecord or ImplicitKind.GetAllRecords), Is.Empty);
        var methods = (IReadOnlyList<object?>)(await Client.CallAsync("system.listMethods", []))!;
        foreach (var message in cls.Messages)
        {
            Assert.That(methods, Does.Contain(message.WireName));
            var tooMany = Enumerable.Repeat<object?>("x", message.Params.Count + (message.TakesSession ? 2 : 1)).ToArray();
            await XenApiAssert.FailsAsync(() => Client.CallAsync(message.WireName, tooMany), "MESSAGE_PARAMETER_COUNT_MISMATCH");
        }
    }

    private readonly Dictionary<(string Class, int Variant), string> _objects = [];

    /// <summary>
    /// <see cref="Sample"/>, with every reference naming an existing object of its class (one
    /// per class and variant, inserted behind the API's back): writes of unknown references
    /// are refused.
    /// </summary>
    private async Task<object?> SampleAsync(XType type, int variant)
    {
        switch (type.Kind)
        {
            case XTypeKind.Ref:
                if (!_objects.TryGetValue((type.Name!, variant), out var reference))
                {
                    _objects[(type.Name!, variant)] = reference = (await Daemon.InsertAsync(ApiSchema.Class(type.Name!))).Ref;
                }
                return reference;
            case XTypeKind.Set:
                return new object?[] { await SampleAsync(type.Element!, variant) };
            case XTypeKind.Map:
                return ValueMap.FromPairs([new((await SampleAsync(type.Key!, variant))!, await SampleAsync(type.Element!, variant))]);
            case XTypeKind.Option:
                return await SampleAsync(type.Element!, variant);
            default:
                return Sample(type, variant);
        }
    }

    /// <summary>A value of the type, different for different variants.</summary>
    public static object? Sample(XType type, int variant) => type.Kind switch
    {
        XTypeKind.String => $"sample-{variant}",
        XTypeKind.Int => 40L + variant,
        XTypeKind.Float => 0.5 + variant,
        XTypeKind.Bool => variant % 2 == 1,
        XTypeKind.DateTime => new DateTime(2020 + variant, 1, 2, 3, 4, 5, DateTimeKind.Utc),
        XTypeKind.Enum => type.EnumMeta.Values[variant % type.EnumMeta.Values.Count],
        XTypeKind.Ref => $"OpaqueRef:00000000-0000-0000-0000-{variant:D12}",
        XTypeKind.Set => new object?[] { Sample(type.Element!, variant) },
        XTypeKind.Map => ValueMap.FromPairs([new(Sample(type.Key!, variant)!, Sample(type.Element!, variant))]),
        XTypeKind.Option => Sample(type.Element!, variant),
        XTypeKind.Record => ValueMap.Empty,
        _ => null,
    };
}

public static class ValueEquality
{
    public static bool DeepEquals(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (ValueMap x, ValueMap y) => x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var v) && DeepEquals(kv.Value, v)),
        (IReadOnlyList<object?> x, IReadOnlyList<object?> y) => x.Count == y.Count && x.Zip(y).All(p => DeepEquals(p.First, p.Second)),
        (double x, double y) => x.Equals(y),
        _ => Equals(a, b),
    };
}
