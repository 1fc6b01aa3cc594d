using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>A connection to xenstored (the guest agent publishes under <c>/local/domain/DOMID</c>).</summary>
public sealed class XenStore : IDisposable
{
    private readonly XsHandle _handle;

    private XenStore(XsHandle handle) => _handle = handle;

    public static XenStore Open()
    {
        var handle = Xs.xs_open(0);
        if (handle.IsInvalid)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new IOException($"xs_open failed ({Marshal.GetPInvokeErrorMessage(errno)}): is xenstored running?");
        }
        return new XenStore(handle);
    }

    /// <summary>The value at <paramref name="path"/>, or null when there is none.</summary>
    public unsafe string? Read(string path)
    {
        var value = Xs.xs_read(_handle, LibxlLayout.XsTransactionNone, path, out var length);
        if (value == 0)
        {
            return null;
        }
        try
        {
            return System.Text.Encoding.UTF8.GetString((byte*)value, checked((int)length));
        }
        finally
        {
            NativeMemory.Free((void*)value);
        }
    }

    /// <summary>The names of <paramref name="path"/>'s children, or null when the path does not exist.</summary>
    public unsafe IReadOnlyList<string>? List(string path)
    {
        var entries = Xs.xs_directory(_handle, LibxlLayout.XsTransactionNone, path, out var count);
        if (entries == 0)
        {
            return null;
        }
        try
        {
            var names = new string[count];
            for (var i = 0; i < count; i++)
            {
                names[i] = Marshal.PtrToStringUTF8(((nint*)entries)[i]) ?? "";
            }
            return names;
        }
        finally
        {
            // One block holds the array and the strings.
            NativeMemory.Free((void*)entries);
        }
    }

    public void Dispose() => _handle.Dispose();
}
