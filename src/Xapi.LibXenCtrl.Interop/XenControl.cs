using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>libxenctrl's hypervisor interface, opened only to learn whether this process may use it.</summary>
public static class XenControl
{
    /// <summary>Null when xc_interface_open succeeds (and the interface is closed again), else why it failed.</summary>
    public static string? TryOpen()
    {
        using var xch = Xc.xc_interface_open(0, 0, 0);
        if (xch.IsInvalid)
        {
            var errno = Marshal.GetLastPInvokeError();
            return $"xc_interface_open failed ({Marshal.GetPInvokeErrorMessage(errno)}); the daemon must run as root in dom0";
        }
        return null;
    }
}
