using System.Runtime.InteropServices;
using Xapi.LibXenCtrl.Interop.Native;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>A connection to xenstored (the guest agent publishes under <c>/local/domain/DOMID</c>).</summary>
public sealed class XenStore : IXenStoreTree, IDisposable
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

    /// <summary>
    /// Waits for xenstored's special watches on domains: <c>@introduceDomain</c> fires when a domain
    /// is introduced, <c>@releaseDomain</c> when one shuts down or dies (the watch libxl's own
    /// domain-death events rest on). Returns once at least one fired (true, every pending event
    /// consumed) or after <paramref name="timeout"/> (false). Call from one thread at a time.
    /// </summary>
    public unsafe bool WaitForDomainChange(TimeSpan timeout)
    {
        if (!_watching)
        {
            if (!Xs.xs_watch(_handle, "@introduceDomain", "introduce") || !Xs.xs_watch(_handle, "@releaseDomain", "release"))
            {
                throw new IOException("xs_watch of xenstored's domain watches failed");
            }
            _watching = true;
            // A watch fires once as it is set: that first event says nothing.
            Drain();
        }
        var poll = new Libc.PollFd { Fd = Xs.xs_fileno(_handle), Events = Libc.PollIn };
        var ready = Libc.poll(&poll, 1, (int)Math.Clamp(timeout.TotalMilliseconds, 0, int.MaxValue));
        return ready > 0 && Drain() > 0;
    }

    private bool _watching;

    private unsafe int Drain()
    {
        var events = 0;
        while (Xs.xs_check_watch(_handle) is var vector and not 0)
        {
            NativeMemory.Free((void*)vector);
            events++;
        }
        return events;
    }

    public void Dispose() => _handle.Dispose();
}
