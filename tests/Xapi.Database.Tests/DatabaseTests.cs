using Xapi.Model;

namespace Xapi.Database.Tests;

public class DatabaseTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");
    private static readonly ClassMeta Vbd = ApiSchema.Class("VBD");
    private static readonly ClassMeta Host = ApiSchema.Class("host");

    private static Row CreateVm(XapiDatabase db, string name, bool template = false) =>
        db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = name, ["is_a_template"] = template }));

    [Test]
    public void New_rows_take_datamodel_defaults_and_a_fresh_uuid()
    {
        var db = new XapiDatabase();
        var row = CreateVm(db, "a");
        var record = new VMRecord(db.Snapshot, row.Ref, row.Values);
        Assert.Multiple(() =>
        {
            Assert.That(record.PowerState, Is.EqualTo(VmPowerState.Halted));
            Assert.That(record.HVMShadowMultiplier, Is.EqualTo(1.0));
            Assert.That(record.Affinity.IsNull, Is.True);
            Assert.That(Guid.TryParse(record.Uuid, out _), Is.True);
            Assert.That(row.Created, Is.EqualTo(1));
        });
    }

    [Test]
    public void Snapshots_are_immutable_while_writes_go_on()
    {
        var db = new XapiDatabase();
        var row = CreateVm(db, "before");
        var before = db.Snapshot;
        db.Write(tx => tx.Set(Vm, row.Ref, Vm.FieldsByName["name_label"], "after"));
        Assert.Multiple(() =>
        {
            Assert.That(before.Get(Vm, row.Ref)[Vm.FieldsByName["name_label"]], Is.EqualTo("before"));
            Assert.That(db.Snapshot.Get(Vm, row.Ref)[Vm.FieldsByName["name_label"]], Is.EqualTo("after"));
            Assert.That(db.Snapshot.Get(Vm, row.Ref).Modified, Is.EqualTo(2));
            Assert.That(db.Snapshot.Get(Vm, row.Ref).Created, Is.EqualTo(1));
        });
    }

    [Test]
    public void A_failed_transaction_leaves_nothing_behind()
    {
        var db = new XapiDatabase();
        var generation = db.Snapshot.Generation;
        Assert.Throws<InvalidOperationException>(() => db.Write(tx =>
        {
            tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = "ghost" });
            throw new InvalidOperationException("abandon");
        }));
        Assert.Multiple(() =>
        {
            Assert.That(db.Snapshot.Count(Vm), Is.Zero);
            Assert.That(db.Snapshot.Generation, Is.EqualTo(generation));
        });
    }

    [Test]
    public void Uuids_are_unique_per_class()
    {
        var db = new XapiDatabase();
        db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["uuid"] = "u1" }));
        var e = Assert.Throws<XenApiException>(() => db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["uuid"] = "u1" })));
        Assert.Multiple(() =>
        {
            Assert.That(e!.Code, Is.EqualTo("DB_UNIQUENESS_CONSTRAINT_VIOLATION"));
            Assert.That(e.Parameters, Is.EqualTo(new[] { "VM", "uuid", "u1" }));
            Assert.That(db.Snapshot.GetByUuid(Vm, "u1"), Is.Not.Null);
            Assert.That(() => db.Snapshot.GetByUuid(Vm, "nope"), Throws.TypeOf<XenApiException>().With.Property("Code").EqualTo("UUID_INVALID"));
        });
    }

    [Test]
    public void The_many_side_follows_the_pointer_and_touches_the_parent()
    {
        var db = new XapiDatabase();
        var vm1 = CreateVm(db, "one");
        var vm2 = CreateVm(db, "two");
        var vbd = db.Write(tx => tx.Create(Vbd, new Dictionary<string, object?> { ["VM"] = vm1.Ref }));
        var vbds = Vm.FieldsByName["VBDs"];
        Assert.That(db.Snapshot.GetField(db.Snapshot.Get(Vm, vm1.Ref), vbds), Is.EqualTo(new object?[] { vbd.Ref }));
        Assert.That(db.Snapshot.Get(Vm, vm1.Ref).Modified, Is.EqualTo(vbd.Created), "the parent shows a modification");

        db.Write(tx => tx.Set(Vbd, vbd.Ref, Vbd.FieldsByName["VM"], vm2.Ref));
        Assert.Multiple(() =>
        {
            Assert.That(db.Snapshot.GetField(db.Snapshot.Get(Vm, vm1.Ref), vbds), Is.Empty);
            Assert.That(db.Snapshot.GetField(db.Snapshot.Get(Vm, vm2.Ref), vbds), Is.EqualTo(new object?[] { vbd.Ref }));
        });

        db.Write(tx => tx.Delete(Vbd, vbd.Ref));
        Assert.That(db.Snapshot.GetField(db.Snapshot.Get(Vm, vm2.Ref), vbds), Is.Empty);
    }

    [Test]
    public void Resident_vms_are_computed_for_hosts()
    {
        var db = new XapiDatabase();
        var host = db.Write(tx => tx.Create(Host, new Dictionary<string, object?>()));
        var vm = db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["resident_on"] = host.Ref }));
        var record = db.Snapshot.ToRecord(db.Snapshot.Get(Host, host.Ref));
        Assert.That(record["resident_VMs"], Is.EqualTo(new object?[] { vm.Ref }));
    }

    [Test]
    public void Records_hold_every_field_in_datamodel_order_computed_sides_included()
    {
        var db = new XapiDatabase();
        var vm = CreateVm(db, "one");
        var vbds = db.Write(tx => Enumerable.Range(0, 3).Select(_ => tx.Create(Vbd, new Dictionary<string, object?> { ["VM"] = vm.Ref }).Ref).ToList());
        var snapshot = db.Snapshot;
        var row = snapshot.Get(Vm, vm.Ref);
        var record = snapshot.ToRecord(row);
        Assert.Multiple(() =>
        {
            Assert.That(record.Keys, Is.EqualTo(Vm.Fields.Select(f => f.Name)));
            Assert.That(record.Values, Is.EqualTo(Vm.Fields.Select(f => snapshot.GetField(row, f))));
            Assert.That(record["VBDs"], Is.EqualTo(vbds));
            Assert.That(row.Values[Vm.FieldsByName["VBDs"].Ordinal], Is.Empty, "the stored row is left as it was");
        });
    }

    [Test]
    public void Deletes_leave_bounded_tombstones()
    {
        var db = new XapiDatabase(tombstoneLimit: 3);
        var rows = Enumerable.Range(0, 5).Select(i => CreateVm(db, $"vm{i}")).ToList();
        foreach (var row in rows)
        {
            db.Write(tx => tx.Delete(Vm, row.Ref));
        }
        var tombstones = db.Snapshot.Tombstones.ToList();
        Assert.Multiple(() =>
        {
            Assert.That(tombstones, Has.Count.EqualTo(3));
            Assert.That(tombstones.Select(t => t.Ref), Is.EqualTo(rows.Skip(2).Select(r => r.Ref)));
            Assert.That(tombstones[^1].Deleted, Is.EqualTo(db.Snapshot.Generation));
            Assert.That(() => db.Snapshot.Get(Vm, rows[0].Ref), Throws.TypeOf<XenApiException>().With.Property("Code").EqualTo("HANDLE_INVALID"));
        });
    }

    [TestCase("field \"is_a_template\"=\"true\"", new[] { "t1", "t2" })]
    [TestCase("not (field \"is_a_template\"=\"true\")", new[] { "plain" })]
    [TestCase("field \"name__label\"=\"t1\" or field \"name_label\"=\"plain\"", new[] { "plain", "t1" })]
    [TestCase("field \"is_a_template\"=\"true\" and not field \"name__label\"=\"t1\"", new[] { "t2" })]
    [TestCase("true", new[] { "plain", "t1", "t2" })]
    [TestCase("false", new string[0])]
    [TestCase("\"a\"=\"a\" and (field \"power_state\"=\"Halted\")", new[] { "plain", "t1", "t2" })]
    public void Where_expressions_select_rows(string expression, string[] expected)
    {
        var db = new XapiDatabase();
        CreateVm(db, "plain");
        CreateVm(db, "t1", template: true);
        CreateVm(db, "t2", template: true);
        var parsed = WhereExpression.Parse(expression);
        var snapshot = db.Snapshot;
        var names = snapshot.All(Vm).Where(r => parsed.Matches(snapshot, r)).Select(r => (string)r[Vm.FieldsByName["name_label"]]!).Order();
        Assert.That(names, Is.EqualTo(expected));
    }

    [TestCase("field \"name__label\"")]
    [TestCase("field \"a\"=\"b\" and")]
    [TestCase("(true")]
    [TestCase("field name=\"x\"")]
    [TestCase("\"unterminated")]
    public void Malformed_where_expressions_are_invalid_values(string expression)
    {
        var e = Assert.Throws<XenApiException>(() => WhereExpression.Parse(expression));
        Assert.Multiple(() =>
        {
            Assert.That(e!.Code, Is.EqualTo("INVALID_VALUE"));
            Assert.That(e.Parameters[0], Is.EqualTo("expr"));
        });
    }

    [Test]
    public void Unknown_fields_in_where_expressions_are_reported()
    {
        var db = new XapiDatabase();
        CreateVm(db, "x");
        var parsed = WhereExpression.Parse("field \"no_such_field\"=\"1\"");
        var snapshot = db.Snapshot;
        var e = Assert.Throws<XenApiException>(() => snapshot.All(Vm).Any(r => parsed.Matches(snapshot, r)));
        Assert.That(e!.Parameters, Is.EqualTo(new[] { "field", "no_such_field" }));
    }

    [Test]
    public void Rows_modified_since_a_generation_match_a_full_scan()
    {
        var db = new XapiDatabase();
        var random = new Random(7);
        var vms = new List<string>();
        var name = Vm.FieldsByName["name_label"];
        for (var i = 0; i < 300; i++)
        {
            switch (random.Next(4))
            {
                case 0 or 1 when vms.Count > 0:
                    var target = vms[random.Next(vms.Count)];
                    db.Write(tx => tx.Set(Vm, target, name, $"n{i}"));
                    break;
                case 2 when vms.Count > 0:
                    var doomed = vms[random.Next(vms.Count)];
                    vms.Remove(doomed);
                    db.Write(tx => tx.Delete(Vm, doomed));
                    break;
                default:
                    vms.Add(CreateVm(db, $"vm{i}").Ref);
                    break;
            }
        }
        var snapshot = db.Snapshot;
        for (long since = 0; since <= snapshot.Generation; since += 17)
        {
            var indexed = snapshot.ModifiedSince(Vm, since).Select(r => r.Ref).Order().ToList();
            var scanned = snapshot.All(Vm).Where(r => r.Modified > since).Select(r => r.Ref).Order().ToList();
            Assert.That(indexed, Is.EqualTo(scanned), $"since {since}");
        }
    }

    [Test]
    public void Concurrent_writers_each_get_their_own_generation()
    {
        var db = new XapiDatabase();
        var generations = new System.Collections.Concurrent.ConcurrentBag<long>();
        Parallel.For(0, 500, i => generations.Add(db.Write(tx =>
        {
            tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = $"vm{i}" });
            return tx.Generation;
        })));
        Assert.Multiple(() =>
        {
            Assert.That(generations.Distinct().Count(), Is.EqualTo(500));
            Assert.That(db.Snapshot.Count(Vm), Is.EqualTo(500));
            Assert.That(db.Snapshot.Generation, Is.EqualTo(500));
        });
    }
}
