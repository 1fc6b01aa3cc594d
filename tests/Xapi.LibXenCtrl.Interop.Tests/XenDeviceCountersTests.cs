namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>Per-device I/O of a domain, read from (a copy of) dom0's sysfs.</summary>
public class XenDeviceCountersTests
{
    [TestCase("xvda", 51712)]
    [TestCase("xvdb", 51728)]
    [TestCase("xvda1", 51713)]
    [TestCase("xvdp", 51952)]
    [TestCase("xvdq", (1 << 28) | (16 << 8))]
    [TestCase("xvdaa", (1 << 28) | (26 << 8))]
    public void Guest_disk_names_are_Xens_device_numbers(string name, int number) =>
        Assert.That(XenDeviceNumber.Of(name), Is.EqualTo(number));

    [TestCase("hda")]
    [TestCase("xvd")]
    [TestCase("xvdA")]
    [TestCase("0")]
    public void Other_names_have_none(string name) => Assert.That(XenDeviceNumber.Of(name), Is.Null);

    [Test]
    public void Vif_and_blkback_counters_are_read_from_the_backend_side_and_a_missing_device_reads_zero()
    {
        var root = Directory.CreateTempSubdirectory("xapi-sysfs-").FullName;
        try
        {
            var vif = Directory.CreateDirectory(Path.Combine(root, "class", "net", "vif7.0", "statistics")).FullName;
            File.WriteAllText(Path.Combine(vif, "rx_bytes"), "1234\n");
            File.WriteAllText(Path.Combine(vif, "tx_bytes"), "5678\n");
            var vbd = Directory.CreateDirectory(Path.Combine(root, "bus", "xen-backend", "devices", "vbd-7-51712", "statistics")).FullName;
            File.WriteAllText(Path.Combine(vbd, "rd_sect"), "8\n");
            File.WriteAllText(Path.Combine(vbd, "wr_sect"), "2\n");
            var counters = new XenDeviceCounters(root);

            Assert.That(counters.Vif(7, 0), Is.EqualTo(new Xapi.Xenops.VifStats(0, BytesReceived: 5678, BytesSent: 1234)), "the guest receives what netback transmits");
            Assert.That(counters.Vbd(7, "0", "xvda"), Is.EqualTo(new Xapi.Xenops.VbdStats("0", 8 * 512, 2 * 512)));
            Assert.That(counters.Vbd(7, "1", "xvdb"), Is.EqualTo(new Xapi.Xenops.VbdStats("1", 0, 0)), "a qdisk disk has no kernel counters");
            Assert.That(counters.Vif(8, 0), Is.EqualTo(new Xapi.Xenops.VifStats(0, 0, 0)));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
