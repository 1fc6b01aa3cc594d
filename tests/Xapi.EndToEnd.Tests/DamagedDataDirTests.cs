using System.Buffers.Binary;
using System.Text;
using Xapi.Database.Persistence;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.EndToEnd.Tests;

/// <summary>
/// The real daemon started on damaged or inconsistent data: it refuses with one line on stderr
/// (which file, what is wrong, what to do) and a non-zero exit code and changes no file, or it
/// recovers correctly. It never starts a new pool over an old one, and never loses a valid record
/// without being told to.
/// </summary>
[Category("Crash")]
public class DamagedDataDirTests
{
    private const string Password = "damage-password";

    private string _dataDir = null!;

    [SetUp]
    public void CreateDataDir() => _dataDir = Directory.CreateTempSubdirectory("xapi-damage-").FullName;

    [TearDown]
    public void DeleteDataDir()
    {
        if (File.Exists(_dataDir))
        {
            File.Delete(_dataDir);
        }
        else if (Directory.Exists(_dataDir))
        {
            Directory.Delete(_dataDir, recursive: true);
        }
    }

    private string JournalPath => Path.Combine(_dataDir, "db", JournalStore.JournalFile);

    /// <summary>A data dir a daemon ran in and shut down cleanly, holding one VM.</summary>
    private async Task ShutDownCleanlyAsync(params string[] extra)
    {
        var options = ServerOptions.Load(["--data-dir", _dataDir, "--http-port", "0", "--listen", "127.0.0.1", "--root-password", Password, "--log-file", "", "--log-level", "Warning", .. extra]);
        options.PasswordHashIterations = 1_000;
        await using var host = XapiHost.Create(options);
        await host.StartAsync();
        using var client = new XenApiClient(host.HttpUri, RpcDialect.JsonRpcV2);
        await client.LoginAsync("root", Password);
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = "precious";
        await client.InvokeAsync("VM.create", record);
    }

    /// <summary>Acknowledged writes, then SIGKILL: the journal holds them as records.</summary>
    private async Task<List<string>> CreateVmsThenKillAsync(int count)
    {
        var vms = new List<string>();
        using var daemon = await DaemonProcess.StartAsync(_dataDir, Password);
        using var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2);
        await client.LoginAsync("root", Password);
        for (var i = 0; i < count; i++)
        {
            var record = ApiSchema.Class("VM").MinimalRecord();
            record["name_label"] = VmName(i);
            vms.Add((string)(await client.InvokeAsync("VM.create", record))!);
        }
        daemon.Kill();
        return vms;
    }

    private static string VmName(int i) => $"acknowledged-vm-{i:D2}";

    /// <summary>Flips one byte in the middle of the journal record that created VM <paramref name="index"/>; returns the record's offset.</summary>
    private int DamageRecordOf(int index)
    {
        var bytes = File.ReadAllBytes(JournalPath);
        var name = Encoding.UTF8.GetBytes(VmName(index));
        var p = 8;
        p += 8 + (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(p));
        while (p + 8 <= bytes.Length)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(p));
            var at = bytes.AsSpan(p + 8, length).IndexOf(name);
            if (at >= 0)
            {
                bytes[p + 8 + at + name.Length - 1] ^= 0x01;
                File.WriteAllBytes(JournalPath, bytes);
                return p;
            }
            p += 8 + length;
        }
        throw new AssertionException($"no journal record holds {VmName(index)}");
    }

    // Every file the daemon keeps, byte for byte (logs aside).
    private Dictionary<string, byte[]> Files() => Directory.Exists(_dataDir)
        ? Directory.GetFiles(_dataDir, "*", SearchOption.AllDirectories).Where(f => !Path.GetFileName(f).StartsWith("xapi", StringComparison.Ordinal) || f.EndsWith(".pfx", StringComparison.Ordinal))
            .ToDictionary(f => f, File.ReadAllBytes)
        : [];

    private static void AssertRefusedInOneLine(DaemonProcess.Exit exit, params string[] expected)
    {
        TestContext.Out.WriteLine($"exit {exit.Code} after {exit.Elapsed.TotalSeconds:0.0} s; stderr: {exit.Error}");
        var lines = exit.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Multiple(() =>
        {
            Assert.That(exit.Code, Is.GreaterThan(0), "the daemon exits non-zero instead of serving");
            Assert.That(lines, Has.Length.EqualTo(1), "one line on stderr");
            Assert.That(exit.Error, Does.StartWith("xapi-dotnet: "));
            foreach (var text in expected)
            {
                Assert.That(exit.Error, Does.Contain(text));
            }
            Assert.That(exit.Output + exit.Error, Does.Not.Contain("   at ").And.Not.Contain("Unhandled exception"), "no stack trace");
        });
    }

    [Test]
    public async Task A_journal_damaged_in_the_middle_refuses_to_start_in_one_line_and_changes_no_file()
    {
        await CreateVmsThenKillAsync(12);
        var offset = DamageRecordOf(5);
        var before = Files();

        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password);

        AssertRefusedInOneLine(exit, JournalPath, $"offset {offset}", "valid records follow", "--salvage-journal");
        Assert.That(Files(), Is.EqualTo(before), "no file changed");
    }

    [Test]
    public async Task Salvaging_keeps_every_acknowledged_write_whose_record_is_intact_and_the_damaged_journal()
    {
        var vms = await CreateVmsThenKillAsync(12);
        DamageRecordOf(5);
        var damaged = File.ReadAllBytes(JournalPath);

        using (var daemon = await DaemonProcess.StartAsync(_dataDir, Password, "--salvage-journal"))
        {
            using var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2);
            await client.LoginAsync("root", Password);
            var names = new List<string>();
            foreach (var vm in vms)
            {
                try
                {
                    names.Add((string)(await client.InvokeAsync("VM.get_name_label", vm))!);
                }
                catch (XenApiException e) when (e.Code == ErrorCodes.HandleInvalid)
                {
                }
            }
            var aside = Directory.GetDirectories(Path.Combine(_dataDir, "db"), "damaged-*").Single();
            Assert.Multiple(() =>
            {
                Assert.That(names, Is.EqualTo(Enumerable.Range(0, 12).Where(i => i != 5).Select(VmName)), "every write whose record is intact, and only the damaged one lost");
                Assert.That(File.ReadAllBytes(Path.Combine(aside, JournalStore.JournalFile)), Is.EqualTo(damaged), "the damaged journal is kept as it was");
                Assert.That(daemon.Output, Has.Some.Contains("Salvaged 6 valid journal records"));
                Assert.That(daemon.Output, Has.Some.Contains("are lost"));
            });
            daemon.Kill();
        }

        // The salvaged state is the database now: a plain start loads it.
        using var again = await DaemonProcess.StartAsync(_dataDir, Password);
        using var check = new XenApiClient(again.Uri, RpcDialect.JsonRpcV2);
        await check.LoginAsync("root", Password);
        Assert.That(await check.InvokeAsync("VM.get_name_label", vms[11]), Is.EqualTo(VmName(11)));
    }

    public static IEnumerable<TestCaseData> Damages()
    {
        TestCaseData Case(string name, Action<string> damage, string[] expected, params string[] extra) =>
            new TestCaseData(damage, expected, extra).SetArgDisplayNames(name);
        yield return Case("snapshot deleted", dir => File.Delete(Path.Combine(dir, "db", JournalStore.SnapshotFile)), [JournalStore.SnapshotFile, "is missing"]);
        yield return Case("database deleted", dir => Directory.Delete(Path.Combine(dir, "db"), recursive: true), ["holds no pool database", Inventory.FileName]);
        yield return Case("inventory garbage", dir => File.WriteAllText(Inventory.PathIn(dir), "{not json"), [Inventory.FileName, "not a valid inventory"]);
        yield return Case("inventory without uuid", dir => File.WriteAllText(Inventory.PathIn(dir), "{\"INSTALLATION_UUID\": \"x\"}"), [Inventory.FileName, "no valid INSTALLATION_UUID"]);
        yield return Case("inventory of another host", dir => Inventory.Write(dir, Guid.NewGuid().ToString("D")), [Inventory.FileName, "holds no such host"]);
        yield return Case("root password garbage", dir => File.WriteAllText(Path.Combine(dir, "root-password"), "hunter2\n"), ["root-password", "does not hold", "--root-password"]);
        yield return Case("certificate garbage", dir => File.WriteAllText(Path.Combine(dir, "xapi-ssl.pfx"), "not a certificate"), ["xapi-ssl.pfx", "not a usable PKCS#12"], "--https-port=-1");
        yield return Case("journal not a journal", dir => File.WriteAllText(Path.Combine(dir, "db", JournalStore.JournalFile), "garbage"), [JournalStore.JournalFile, "not a database journal"]);
    }

    [TestCaseSource(nameof(Damages))]
    public async Task A_damaged_or_inconsistent_data_dir_is_refused_in_one_line_and_changes_no_file(Action<string> damage, string[] expected, string[] extra)
    {
        await ShutDownCleanlyAsync(extra);
        damage(_dataDir);
        var before = Files();

        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password, extra);

        AssertRefusedInOneLine(exit, expected);
        Assert.That(Files(), Is.EqualTo(before), "no file changed");
    }

    [Test]
    public async Task A_data_dir_that_is_a_file_is_refused_in_one_line()
    {
        Directory.Delete(_dataDir);
        File.WriteAllText(_dataDir, "a file");

        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password);

        AssertRefusedInOneLine(exit, _dataDir, "is a file");
        Assert.That(File.ReadAllText(_dataDir), Is.EqualTo("a file"));
    }

    [Test]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_read_only_data_dir_is_refused_in_one_line()
    {
        await ShutDownCleanlyAsync();
        var root = Environment.UserName == "root";
        try
        {
            if (root)
            {
                // Permission bits do not stop root; the immutable attribute does, where the file system has it.
                using var chattr = System.Diagnostics.Process.Start("chattr", ["+i", _dataDir]);
                await chattr.WaitForExitAsync();
                if (chattr.ExitCode != 0)
                {
                    Assert.Ignore("running as root on a file system without chattr +i: cannot make the data dir read-only");
                }
            }
            else
            {
                File.SetUnixFileMode(_dataDir, UnixFileMode.UserRead | UnixFileMode.UserExecute);
            }

            var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password);

            AssertRefusedInOneLine(exit, _dataDir, "cannot be written", "writable");
        }
        finally
        {
            if (root)
            {
                using var undo = System.Diagnostics.Process.Start("chattr", ["-i", _dataDir]);
                await undo.WaitForExitAsync();
            }
            else
            {
                File.SetUnixFileMode(_dataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }
    }

    [Test]
    public async Task A_config_file_that_is_not_json_is_refused_in_one_line()
    {
        var config = Path.Combine(_dataDir, "config.json");
        File.WriteAllText(config, "{ \"HttpPort\": ");

        var exit = await DaemonProcess.RunUntilExitAsync(_dataDir, Password, "--config", config);

        AssertRefusedInOneLine(exit, config, "not valid JSON");
    }

    [Test]
    public async Task A_deleted_inventory_is_rebuilt_from_the_database_and_this_host_is_the_one_it_holds()
    {
        await ShutDownCleanlyAsync();
        var inventory = File.ReadAllBytes(Inventory.PathIn(_dataDir));
        File.Delete(Inventory.PathIn(_dataDir));

        using var daemon = await DaemonProcess.StartAsync(_dataDir, Password);
        using var client = new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2);
        await client.LoginAsync("root", Password);
        var thisHost = await client.InvokeAsync("session.get_this_host", client.Session);
        var hosts = (IReadOnlyList<object?>)(await client.InvokeAsync("host.get_all"))!;
        Assert.Multiple(() =>
        {
            Assert.That(hosts, Is.EqualTo(new[] { thisHost }), "this host is the host the pool holds");
            Assert.That(File.ReadAllBytes(Inventory.PathIn(_dataDir)), Is.EqualTo(inventory), "the inventory is the one first boot wrote");
        });
    }
}
