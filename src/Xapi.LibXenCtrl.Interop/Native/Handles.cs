using System.Runtime.InteropServices;

namespace Xapi.LibXenCtrl.Interop.Native;

/// <summary>
/// A <c>libxl_ctx*</c>. It owns what must outlive the ctx (libxl keeps pointers to both): the
/// child-process hooks and the logger; released together, after the last call in flight.
/// </summary>
internal sealed class LibxlContextHandle : SafeHandle
{
    public LibxlContextHandle()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Native memory holding the libxl_childproc_hooks libxl was given; freed after the ctx.</summary>
    internal unsafe void* Hooks { get; set; }

    internal XtlLoggerHandle? Logger { get; set; }

    protected override unsafe bool ReleaseHandle()
    {
        var rc = Libxl.libxl_ctx_free(handle);
        NativeMemory.Free(Hooks);
        Hooks = null;
        Logger?.Dispose();
        return rc == 0;
    }
}

/// <summary>A <c>xentoollog_logger*</c> writing to a FILE* of its own (closed with it).</summary>
internal sealed class XtlLoggerHandle : SafeHandle
{
    public XtlLoggerHandle()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    internal nint File { get; set; }

    /// <summary>A logger writing libxl's messages at <paramref name="minLevel"/> and above to a duplicate of stderr.</summary>
    public static XtlLoggerHandle CreateOnStderr(int minLevel)
    {
        var fd = Libc.dup(2);
        if (fd < 0)
        {
            throw new IOException($"dup(2) failed: errno {Marshal.GetLastPInvokeError()}");
        }
        var file = Libc.fdopen(fd, "w");
        if (file == 0)
        {
            throw new IOException($"fdopen failed: errno {Marshal.GetLastPInvokeError()}");
        }
        var logger = new XtlLoggerHandle { File = file };
        logger.SetHandle(Xtl.xtl_createlogger_stdiostream(file, minLevel, 0));
        if (logger.IsInvalid)
        {
            Libc.fclose(file);
            throw new OutOfMemoryException("xtl_createlogger_stdiostream failed");
        }
        return logger;
    }

    protected override bool ReleaseHandle()
    {
        Xtl.xtl_logger_destroy(handle);
        // The stdiostream logger does not close its file.
        return Libc.fclose(File) == 0;
    }
}

/// <summary>A <c>xc_interface*</c> (libxenctrl).</summary>
internal sealed class XcInterfaceHandle : SafeHandle
{
    public XcInterfaceHandle()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle() => Xc.xc_interface_close(handle) == 0;
}

/// <summary>A <c>struct xs_handle*</c> (libxenstore).</summary>
internal sealed class XsHandle : SafeHandle
{
    public XsHandle()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        Xs.xs_close(handle);
        return true;
    }
}
