using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>
/// Whether this machine can run domains through Xen: the libraries first (without them nothing
/// else can be asked), then the hypervisor, the control domain's rights and its device.
/// </summary>
public static class XenEnvironment
{
    /// <summary>Where the probe looks; tests point it at a fake tree.</summary>
    public sealed record Paths(string ProcXenCapabilities, string SysHypervisorType, string Privcmd)
    {
        public static Paths Host { get; } = new("/proc/xen/capabilities", "/sys/hypervisor/type", "/dev/xen/privcmd");
    }

    /// <summary>Null when Xen is usable here; otherwise one line that names exactly what is missing.</summary>
    /// <param name="canLoad">Loads a library by soname (tests replace it); by default <see cref="NativeLibrary.TryLoad(string, out nint)"/>.</param>
    /// <param name="openHypervisor">Opens the hypervisor interface last, null when it opens, else why not; by default through libxenctrl.</param>
    public static string? Probe(Paths? paths = null, Func<string, bool>? canLoad = null, Func<string?>? openHypervisor = null)
    {
        paths ??= Paths.Host;
        canLoad ??= soname => NativeLibrary.TryLoad(soname, out _);
        openHypervisor ??= XenControl.TryOpen;
        const string Prefix = "--hypervisor xen: ";
        foreach (var (_, soname, package) in XenLibraries.All)
        {
            if (!canLoad(soname))
            {
                return $"{Prefix}{soname} not found (install {package})";
            }
        }

        if (!File.Exists(paths.ProcXenCapabilities))
        {
            return ReadTrimmed(paths.SysHypervisorType) == "xen"
                ? $"{Prefix}{paths.ProcXenCapabilities} is absent: xenfs is not mounted (mount -t xenfs xenfs /proc/xen)"
                : $"{Prefix}no Xen hypervisor: {paths.ProcXenCapabilities} is absent (not running in a Xen dom0)";
        }
        // The control domain's capabilities say control_d; a guest's are empty.
        if (ReadTrimmed(paths.ProcXenCapabilities)?.Contains("control_d", StringComparison.Ordinal) != true)
        {
            return $"{Prefix}not the control domain: {paths.ProcXenCapabilities} has no control_d (running in a Xen guest, not dom0)";
        }
        if (!File.Exists(paths.Privcmd))
        {
            return $"{Prefix}{paths.Privcmd} missing (load the xen-privcmd module)";
        }
        return openHypervisor() is { } failure ? Prefix + failure : null;
    }

    private static string? ReadTrimmed(string path)
    {
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
