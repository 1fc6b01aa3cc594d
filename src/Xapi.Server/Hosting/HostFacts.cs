using System.Globalization;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace Xapi.Server.Hosting;

/// <summary>What this machine is: CPUs, memory, name and management address, read from /proc.</summary>
public sealed record HostFacts(
    string Hostname,
    string Address,
    string ManagementDevice,
    string Mac,
    int CpuCount,
    string CpuVendor,
    string CpuModelName,
    string CpuFamily,
    string CpuModel,
    string CpuStepping,
    string CpuFlags,
    long CpuSpeedMhz,
    long MemoryTotal,
    long MemoryFree)
{
    public int SocketCount { get; init; } = 1;

    /// <summary>The control domain's memory, bytes, where the hypervisor says (null: a share of the host's).</summary>
    public long? ControlDomainMemory { get; init; }

    /// <summary>The control domain's vCPUs online, where the hypervisor says (null: one per host CPU).</summary>
    public int? ControlDomainVcpus { get; init; }

    public static HostFacts Read()
    {
        var cpu = ReadKeyValues("/proc/cpuinfo", ':');
        var mem = ReadKeyValues("/proc/meminfo", ':');
        var (device, address, mac) = ManagementInterface();
        return new HostFacts(
            Environment.MachineName,
            address,
            device,
            mac,
            Environment.ProcessorCount,
            cpu.GetValueOrDefault("vendor_id", "unknown"),
            cpu.GetValueOrDefault("model name", "unknown"),
            cpu.GetValueOrDefault("cpu family", "0"),
            cpu.GetValueOrDefault("model", "0"),
            cpu.GetValueOrDefault("stepping", "0"),
            cpu.GetValueOrDefault("flags", ""),
            double.TryParse(cpu.GetValueOrDefault("cpu MHz"), NumberStyles.Float, CultureInfo.InvariantCulture, out var mhz) && mhz is > 0 and < 1e6 ? (long)mhz : 0,
            Kilobytes(mem.GetValueOrDefault("MemTotal")) is var total and > 0 ? total : 8L << 30,
            Kilobytes(mem.GetValueOrDefault("MemAvailable")) is var free and > 0 ? free : 4L << 30);
    }

    private static long Kilobytes(string? text) =>
        text?.Split(' ', StringSplitOptions.RemoveEmptyEntries) is [var number, ..] && long.TryParse(number, CultureInfo.InvariantCulture, out var kb) && kb is > 0 and < long.MaxValue / 1024 ? kb * 1024 : 0;

    // First values win: /proc/cpuinfo repeats its keys once per CPU.
    private static Dictionary<string, string> ReadKeyValues(string path, char separator)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!File.Exists(path))
        {
            return result;
        }
        foreach (var line in File.ReadLines(path))
        {
            var i = line.IndexOf(separator);
            if (i > 0)
            {
                result.TryAdd(line[..i].Trim(), line[(i + 1)..].Trim());
            }
        }
        return result;
    }

    private static (string Device, string Address, string Mac) ManagementInterface()
    {
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                if (nic.OperationalStatus != OperationalStatus.Up || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
                {
                    continue;
                }
                var ipv4 = nic.GetIPProperties().UnicastAddresses.FirstOrDefault(a => a.Address.AddressFamily == AddressFamily.InterNetwork);
                if (ipv4 is not null)
                {
                    var mac = string.Join(":", nic.GetPhysicalAddress().GetAddressBytes().Select(b => b.ToString("x2", CultureInfo.InvariantCulture)));
                    return (nic.Name, ipv4.Address.ToString(), mac.Length > 0 ? mac : "00:00:00:00:00:00");
                }
            }
        }
        catch (NetworkInformationException)
        {
        }
        return ("lo", "127.0.0.1", "00:00:00:00:00:00");
    }
}
