using Xapi.Model;
using Xapi.Xenops.Guest;

namespace Xapi.Xenops.Tests;

public sealed class GuestAgentParserTests
{
    [Test]
    public void New_protocol_addresses_are_keyed_by_interface_and_the_first_ipv4_is_also_the_ip()
    {
        var metrics = GuestAgentParser.Parse(new Dictionary<string, string>
        {
            ["attr/vif/0/ipv4/1"] = "10.0.0.9",
            ["attr/vif/0/ipv4/0"] = "10.0.0.5",
            ["attr/vif/0/ipv6/0"] = "fd00::5",
            ["attr/vif/2/ipv4/0"] = "192.0.2.7",
        });

        Assert.That(metrics.Networks, Is.EqualTo(new Dictionary<string, string>
        {
            ["0/ip"] = "10.0.0.5",
            ["0/ipv4/0"] = "10.0.0.5",
            ["0/ipv4/1"] = "10.0.0.9",
            ["0/ipv6/0"] = "fd00::5",
            ["2/ip"] = "192.0.2.7",
            ["2/ipv4/0"] = "192.0.2.7",
        }));
    }

    [Test]
    public void Old_protocol_eth_addresses_fill_the_same_keys()
    {
        var metrics = GuestAgentParser.Parse(new Dictionary<string, string>
        {
            ["attr/eth1/ip"] = "10.1.1.1",
            ["attr/eth1/ipv6/0/addr"] = "fd00::1",
        });

        Assert.That(metrics.Networks, Is.EqualTo(new Dictionary<string, string>
        {
            ["1/ip"] = "10.1.1.1",
            ["1/ipv4/0"] = "10.1.1.1",
            ["1/ipv6/0"] = "fd00::1",
        }));
    }

    [Test]
    public void Pv_drivers_without_a_micro_version_report_micro_minus_one()
    {
        var metrics = GuestAgentParser.Parse(new Dictionary<string, string>
        {
            ["attr/PVAddons/MajorVersion"] = "9",
            ["attr/PVAddons/MinorVersion"] = "4",
        });

        Assert.Multiple(() =>
        {
            Assert.That(metrics.PvDriversVersion, Is.EqualTo(new Dictionary<string, string> { ["major"] = "9", ["minor"] = "4", ["micro"] = "-1" }));
            Assert.That(GuestAgentParser.Parse(new Dictionary<string, string>()).PvDriversVersion, Is.Empty);
        });
    }

    [Test]
    public void Os_version_hostname_and_hotplug_flags_are_read_from_their_keys()
    {
        var metrics = GuestAgentParser.Parse(new Dictionary<string, string>
        {
            ["data/os_name"] = "Debian GNU/Linux 12 (bookworm)",
            ["data/os_distro"] = "debian",
            ["data/os_majorver"] = "12",
            ["data/host_name_dns"] = "web1",
            ["data/domain"] = "example.org",
            ["feature/hotplug/vbd"] = "1",
            ["feature/hotplug/vif"] = "0",
        });

        Assert.Multiple(() =>
        {
            Assert.That(metrics.OsVersion, Is.EqualTo(new Dictionary<string, string> { ["name"] = "Debian GNU/Linux 12 (bookworm)", ["distro"] = "debian", ["major"] = "12" }));
            Assert.That(metrics.NetbiosName, Is.EqualTo(new Dictionary<string, string> { ["host_name"] = "web1.example.org" }));
            Assert.That(metrics.CanUseHotplugVbd, Is.EqualTo(TristateType.Yes));
            Assert.That(metrics.CanUseHotplugVif, Is.EqualTo(TristateType.No));
        });
    }

    [Test]
    public void A_reason_not_to_suspend_replaces_the_suspend_feature()
    {
        var metrics = GuestAgentParser.Parse(new Dictionary<string, string>
        {
            ["control/feature-suspend"] = "1",
            ["control/feature-balloon"] = "1",
            ["data/cant_suspend_reason"] = "passthrough device",
            ["data/ts"] = "1",
        });

        Assert.That(metrics.Other, Is.EqualTo(new Dictionary<string, string>
        {
            ["feature-balloon"] = "1",
            ["data-cant-suspend-reason"] = "passthrough device",
            ["data-ts"] = "1",
        }));
    }
}
