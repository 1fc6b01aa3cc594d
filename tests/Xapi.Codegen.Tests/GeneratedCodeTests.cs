using Xapi.Codegen;
using Xapi.Model;
using Xapi.Tests;

namespace Xapi.Codegen.Tests;

public class GeneratedCodeTests
{
    [Test]
    public void Checked_in_generated_code_matches_the_schema()
    {
        var schema = SchemaReader.Read(Path.Combine(RepositoryRoot.Path, "schema"));
        var stale = new List<string>();
        foreach (var (file, expected) in Generator.Generate(schema))
        {
            var path = Path.Combine(RepositoryRoot.Path, file);
            if (!File.Exists(path) || File.ReadAllText(path) != expected)
            {
                stale.Add(file);
            }
        }
        Assert.That(stale, Is.Empty, "regenerate with: dotnet run --project tools/Xapi.Codegen -- generate");
    }

    [Test]
    public void Schema_holds_the_whole_datamodel()
    {
        var schema = SchemaReader.Read(Path.Combine(RepositoryRoot.Path, "schema"));
        Assert.Multiple(() =>
        {
            Assert.That(schema.Classes, Has.Count.EqualTo(72));
            Assert.That(schema.Classes.Sum(c => c.Fields.Count), Is.EqualTo(922));
            Assert.That(schema.Enums, Has.Count.GreaterThanOrEqualTo(70));
            Assert.That(schema.Errors.Select(e => e.Code), Does.Contain("HANDLE_INVALID").And.Contain("SESSION_INVALID"));
            Assert.That(ApiSchema.Classes, Has.Length.EqualTo(72));
        });
    }

    [Test]
    public void Every_class_with_records_can_be_queried_with_where_expressions()
    {
        foreach (var cls in ApiSchema.Classes.Where(c => c.MessagesByName.ContainsKey("get_all_records")))
        {
            Assert.That(cls.MessagesByName["get_all_records_where"].Implicit, Is.EqualTo(ImplicitKind.GetAllRecordsWhere), cls.Name);
            Assert.That(cls.MessagesByName["get_all_where"].Implicit, Is.EqualTo(ImplicitKind.GetAllWhere), cls.Name);
        }
    }

    [Test]
    public void Async_flags_and_error_parameters_come_through()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ApiSchema.MessagesByWireName["VM.start"].IsAsync, Is.True);
            Assert.That(ApiSchema.MessagesByWireName["VM.get_record"].IsAsync, Is.False);
            Assert.That(ApiSchema.MessagesByWireName["VM.create"].IsAsync, Is.True, "implicit create is async-capable");
            Assert.That(ApiSchema.ErrorsByCode["VM_BAD_POWER_STATE"].Params, Is.EqualTo(new[] { "vm", "expected", "actual" }));
            Assert.That(ApiSchema.MessagesByWireName["session.login_with_password"].MinimumArity, Is.EqualTo(2));
            Assert.That(ApiSchema.MessagesByWireName["session.login_with_password"].TakesSession, Is.False);
        });
    }

    [Test]
    public void Relations_compute_the_many_side_from_the_pointer()
    {
        var vm = ApiSchema.Class("VM");
        Assert.Multiple(() =>
        {
            Assert.That(vm.FieldsByName["VBDs"].ManyOf, Is.EqualTo("VBD.VM"));
            Assert.That(vm.FieldsByName["snapshots"].ManyOf, Is.EqualTo("VM.snapshot_of"));
            Assert.That(ApiSchema.Class("host").FieldsByName["resident_VMs"].ManyOf, Is.EqualTo("VM.resident_on"));
            Assert.That(ApiSchema.Class("SR").FieldsByName["VDIs"].ManyOf, Is.EqualTo("VDI.SR"));
        });
    }

    [Test]
    public void Runtime_naming_agrees_with_the_generator()
    {
        var names = ApiSchema.Classes.SelectMany(c => c.Messages.Select(m => m.Name).Append(c.Name));
        Assert.That(names.Where(n => Naming.Pascal(n) != Generator.Pascal(n)), Is.Empty);
    }

    [TestCase("{}", "(string -> string) map", "{}")]
    [TestCase("{\"address\" -> \"localhost\", \"port\" -> \"27000\"}", "(string -> string) map", "{\"address\":\"localhost\",\"port\":\"27000\"}")]
    [TestCase("{0}", "int set", "[0]")]
    [TestCase("1.", "float", "1")]
    [TestCase("\"()\"", "string", "\"()\"")]
    [TestCase("Null", "task ref", "\"OpaqueRef:NULL\"")]
    public void Datamodel_default_literals_convert_to_typed_values(string literal, string type, string expectedJson)
    {
        var converted = SchemaImporter.ConvertDefault(literal, type);
        Assert.That(converted?.ToJsonString() ?? "null", Is.EqualTo(expectedJson));
    }

    [TestCase("VDI", "SR", false, null, null, Description = "a required constructor ref without a default")]
    [TestCase("VBD", "VM", false, null, null)]
    [TestCase("VM", "suspend_SR", true, null, null, Description = "default OpaqueRef:NULL")]
    [TestCase("VM", "appliance", true, null, null)]
    [TestCase("VM", "affinity", true, null, null, Description = "annotated: 'or NULL'")]
    [TestCase("pool", "default_SR", true, null, null)]
    [TestCase("VBD", "VDI", false, "empty", null, Description = "annotated: NULL only for an empty drive")]
    [TestCase("PGPU", "GPU_group", false, null, null, Description = "annotated against its NULL default")]
    [TestCase("PVS_cache_storage", "SR", false, null, "SR")]
    [TestCase("Observer", "hosts", false, null, "host")]
    [TestCase("VM", "VBDs", false, null, null, Description = "refs in a set are never NULL")]
    public void Reference_rules_come_from_the_datamodel_and_the_annotations(string cls, string field, bool nullAllowed, string? when, string? invalidValue)
    {
        var rule = ApiSchema.Class(cls).FieldsByName[field].References;
        Assert.That(rule, Is.EqualTo(new ReferenceRule(nullAllowed, when, invalidValue)));
    }

    [Test]
    public void Every_field_holding_references_has_a_rule_and_no_other_field_has_one()
    {
        static bool HoldsRefs(XType t) => t.Kind == XTypeKind.Ref || (t.Element is { } e && HoldsRefs(e)) || (t.Key is { } k && HoldsRefs(k));
        var fields = ApiSchema.Classes.SelectMany(c => c.Fields).ToList();
        Assert.That(fields.Where(f => HoldsRefs(f.Type) != (f.References is not null)).Select(f => $"{f.Owner.Name}.{f.Name}"), Is.Empty);
    }

    [TestCase("{\"VM.no_such_field\": {\"null_allowed\": true, \"why\": \"x\"}}", Description = "no such field")]
    [TestCase("{\"VM.name_label\": {\"null_allowed\": true, \"why\": \"x\"}}", Description = "not a reference")]
    [TestCase("{\"VM.affinity\": {\"null_allowed\": true}}", Description = "no reason given")]
    [TestCase("{\"VM.affinity\": {\"nul_allowed\": true, \"why\": \"x\"}}", Description = "misspelt key")]
    [TestCase("{\"VBD.VDI\": {\"null_allowed_when\": \"userdevice\", \"why\": \"x\"}}", Description = "condition not a bool field")]
    [TestCase("{\"VM.VBDs\": {\"null_allowed\": true, \"why\": \"x\"}}", Description = "NULL inside a set")]
    public void A_reference_annotation_that_does_not_fit_the_schema_stops_the_generator(string fields)
    {
        var dir = Directory.CreateTempSubdirectory("xapi-schema-");
        try
        {
            var source = Path.Combine(RepositoryRoot.Path, "schema");
            foreach (var file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
            {
                var target = Path.Combine(dir.FullName, Path.GetRelativePath(source, file));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(file, target);
            }
            File.WriteAllText(Path.Combine(dir.FullName, SchemaReader.ReferencesFile), $"{{\"fields\": {fields}}}");
            Assert.That(() => SchemaReader.Read(dir.FullName), Throws.InvalidOperationException);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
