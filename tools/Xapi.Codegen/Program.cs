using Xapi.Codegen;

// Verbs:
//   import [REFERENCE_DIR] [SCHEMA_DIR]   reference datamodel -> schema/ (the project's own format)
//   generate [SCHEMA_DIR] [REPO_ROOT]     schema/ -> src/Xapi.Model/Generated/*.Generated.cs, src/Xapi.Database/Postgres/Schema.Generated.sql
var root = FindRepositoryRoot();
var verb = args.Length > 0 ? args[0] : "generate";
switch (verb)
{
    case "import":
        SchemaImporter.Import(
            args.Length > 1 ? args[1] : Path.Combine(root, "..", "shared", "reference"),
            args.Length > 2 ? args[2] : Path.Combine(root, "schema"));
        Console.WriteLine("schema imported");
        return 0;
    case "generate":
        var schema = SchemaReader.Read(args.Length > 1 ? args[1] : Path.Combine(root, "schema"));
        var output = args.Length > 2 ? args[2] : root;
        var generated = Generator.Generate(schema);
        // A class dropped from the schema must not leave its file behind.
        var modelDir = Path.Combine(output, Generator.ModelDir);
        if (Directory.Exists(modelDir))
        {
            foreach (var stale in Directory.GetFiles(modelDir, "*.Generated.cs"))
            {
                if (!generated.ContainsKey(Generator.ModelDir + "/" + Path.GetFileName(stale)))
                {
                    File.Delete(stale);
                    Console.WriteLine($"removed {Path.GetFileName(stale)}");
                }
            }
        }
        foreach (var (file, text) in generated)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(output, file))!);
            File.WriteAllText(Path.Combine(output, file), text);
            Console.WriteLine($"wrote {file} ({text.Length:N0} chars)");
        }
        return 0;
    default:
        Console.Error.WriteLine($"unknown verb '{verb}': use import or generate");
        return 2;
}

static string FindRepositoryRoot()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "Xapi.sln")) || File.Exists(Path.Combine(dir.FullName, "Xapi.slnx")))
        {
            return dir.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}
