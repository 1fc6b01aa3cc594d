namespace Xapi.Storage.Nbd;

/// <summary>An NBD peer refused an option or a command, or broke the protocol.</summary>
public sealed class NbdException : IOException
{
    public NbdException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    private NbdException(string message, uint optionReply, uint error)
        : base(message)
    {
        OptionReply = optionReply;
        Error = error;
    }

    /// <summary>The <c>NBD_REP_ERR_*</c> the server answered an option with, or 0.</summary>
    public uint OptionReply { get; }

    /// <summary>The errno-like <c>NBD_E*</c> the server answered a command with, or 0.</summary>
    public uint Error { get; }

    internal static NbdException ForOption(uint option, uint reply, string detail) =>
        new($"the NBD server refused {NbdProtocol.OptionName(option)}: {OptionReplyName(reply)}{(detail.Length > 0 ? " (" + detail + ")" : "")}", reply, 0);

    internal static NbdException ForCommand(ushort command, long offset, long length, uint error, string? detail) =>
        new($"the NBD server failed {NbdProtocol.CommandName(command)} {offset}+{length}: {ErrorName(error)}{(string.IsNullOrEmpty(detail) ? "" : " (" + detail + ")")}", 0, error);

    public static string OptionReplyName(uint reply) => reply switch
    {
        NbdProtocol.RepErrUnsup => "NBD_REP_ERR_UNSUP",
        NbdProtocol.RepErrPolicy => "NBD_REP_ERR_POLICY",
        NbdProtocol.RepErrInvalid => "NBD_REP_ERR_INVALID",
        NbdProtocol.RepErrPlatform => "NBD_REP_ERR_PLATFORM",
        NbdProtocol.RepErrTlsReqd => "NBD_REP_ERR_TLS_REQD",
        NbdProtocol.RepErrUnknown => "NBD_REP_ERR_UNKNOWN",
        NbdProtocol.RepErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        NbdProtocol.RepErrBlockSizeReqd => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        NbdProtocol.RepErrTooBig => "NBD_REP_ERR_TOO_BIG",
        _ => "reply " + reply.ToString("x", System.Globalization.CultureInfo.InvariantCulture),
    };

    public static string ErrorName(uint error) => error switch
    {
        NbdProtocol.EPerm => "EPERM",
        NbdProtocol.EIO => "EIO",
        NbdProtocol.ENoMem => "ENOMEM",
        NbdProtocol.EInval => "EINVAL",
        NbdProtocol.ENoSpc => "ENOSPC",
        NbdProtocol.EOverflow => "EOVERFLOW",
        NbdProtocol.ENotSup => "ENOTSUP",
        NbdProtocol.EShutdown => "ESHUTDOWN",
        _ => "error " + error.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
