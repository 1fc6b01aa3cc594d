using Xapi.Xenops;
using Xapi.Xenops.Memory;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>The Xen backend's state file: what it must read back after a daemon restart to change a found domain's devices.</summary>
public class XenBackendStateTests
{
    [Test]
    public void A_domains_config_and_attached_disks_read_back_as_written()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("xapi-xen-state-").FullName, "xenops-xen.json");
        try
        {
            var config = new DomainConfig
            {
                Uuid = Guid.NewGuid(),
                Name = "diskpv",
                Type = DomainType.Pv,
                Memory = new MemoryRange(64L << 20, 96L << 20, 128L << 20, 128L << 20),
                Vbds = [new VbdConfig("0", VbdKind.Disk, VbdMode.ReadWrite, new DiskBinding("3484ccef-25be-4a7f-b128-18b35bff062b")), new VbdConfig("3", VbdKind.CdRom, VbdMode.ReadOnly, null)],
                Vifs = [new VifConfig(0, "00:16:3e:00:00:02", "xapi0", 1500)],
                Kernel = "/guest/vmlinuz",
                Platform = new Dictionary<string, string> { ["viridian"] = "false" },
            };
            var disks = new Dictionary<string, XenDisk> { ["0"] = new("/var/lib/xapi-sr/sr/3484ccef.qcow2", "qcow2", XenDisk.QdiskBackend, "xvda") };
            XenBackendState.Write(path, [new XenBackendState.Entry(config, 8, disks)]);

            var entry = XenBackendState.Read(path).Single();
            Assert.Multiple(() =>
            {
                Assert.That(entry.DomId, Is.EqualTo(8));
                Assert.That(entry.Config.Uuid, Is.EqualTo(config.Uuid));
                Assert.That(entry.Config.Memory, Is.EqualTo(config.Memory));
                Assert.That(entry.Config.Vbds, Is.EqualTo(config.Vbds), "VBDs compare as the backend's plug and unplug compare them");
                Assert.That(entry.Config.Vifs, Is.EqualTo(config.Vifs));
                Assert.That(entry.Config.Platform, Is.EquivalentTo(config.Platform));
                Assert.That(entry.Disks, Is.EquivalentTo(disks));
            });
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
        }
    }

    [Test]
    public void No_file_is_no_domains_and_a_damaged_one_is_refused_naming_it()
    {
        var directory = Directory.CreateTempSubdirectory("xapi-xen-state-").FullName;
        try
        {
            var path = Path.Combine(directory, "xenops-xen.json");
            Assert.That(XenBackendState.Read(path), Is.Empty);
            File.WriteAllText(path, "{\"Version\":1,\"Domains\":[{\"Config\":");
            var e = Assert.Throws<InvalidDataException>(() => XenBackendState.Read(path));
            Assert.That(e!.Message, Does.Contain(path));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
