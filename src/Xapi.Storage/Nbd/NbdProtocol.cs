namespace Xapi.Storage.Nbd;

/// <summary>Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).</summary>
internal static class NbdProtocol
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x0003e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const ushort FlagFixedNewstyle = 1;
    public const ushort FlagNoZeroes = 2;
    public const uint ClientFlagFixedNewstyle = 1;
    public const uint ClientFlagNoZeroes = 2;

    public const ushort TransmitHasFlags = 1;
    public const ushort TransmitReadOnly = 2;
    public const ushort TransmitSendFlush = 4;
    public const ushort TransmitSendFua = 8;
    public const ushort TransmitSendTrim = 32;
    public const ushort TransmitSendWriteZeroes = 64;
    public const ushort TransmitSendDf = 128;
    public const ushort TransmitCanMultiConn = 256;

    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepFlagError = 1u << 31;
    public const uint RepErrUnsup = RepFlagError + 1;
    public const uint RepErrPolicy = RepFlagError + 2;
    public const uint RepErrInvalid = RepFlagError + 3;
    public const uint RepErrPlatform = RepFlagError + 4;
    public const uint RepErrTlsReqd = RepFlagError + 5;
    public const uint RepErrUnknown = RepFlagError + 6;
    public const uint RepErrShutdown = RepFlagError + 7;
    public const uint RepErrBlockSizeReqd = RepFlagError + 8;
    public const uint RepErrTooBig = RepFlagError + 9;

    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdCache = 5;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    public const ushort CmdFlagFua = 1;
    public const ushort CmdFlagNoHole = 2;
    public const ushort CmdFlagDf = 4;
    public const ushort CmdFlagReqOne = 8;

    public const uint EPerm = 1;
    public const uint EIO = 5;
    public const uint ENoMem = 12;
    public const uint EInval = 22;
    public const uint ENoSpc = 28;
    public const uint EOverflow = 75;
    public const uint ENotSup = 95;
    public const uint EShutdown = 108;

    public const ushort ReplyFlagDone = 1;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeError = (1 << 15) + 1;
    public const ushort ReplyTypeErrorOffset = (1 << 15) + 2;
    public const ushort ReplyTypeErrorBit = 1 << 15;

    /// <summary>The only meta context this code speaks: allocation and zero status.</summary>
    public const string BaseAllocation = "base:allocation";
    public const uint StateHole = 1;
    public const uint StateZero = 2;

    /// <summary>What the spec lets a client assume a server accepts without block size info.</summary>
    public const int DefaultMaxPayload = 32 << 20;

    public const int RequestHeaderLength = 28;
    public const int SimpleReplyHeaderLength = 16;
    public const int StructuredReplyHeaderLength = 20;

    public static string OptionName(uint option) => option switch
    {
        OptExportName => "EXPORT_NAME",
        OptAbort => "ABORT",
        OptList => "LIST",
        OptStartTls => "STARTTLS",
        OptInfo => "INFO",
        OptGo => "GO",
        OptStructuredReply => "STRUCTURED_REPLY",
        OptListMetaContext => "LIST_META_CONTEXT",
        OptSetMetaContext => "SET_META_CONTEXT",
        _ => option.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    public static string CommandName(ushort command) => command switch
    {
        CmdRead => "READ",
        CmdWrite => "WRITE",
        CmdDisc => "DISC",
        CmdFlush => "FLUSH",
        CmdTrim => "TRIM",
        CmdCache => "CACHE",
        CmdWriteZeroes => "WRITE_ZEROES",
        CmdBlockStatus => "BLOCK_STATUS",
        _ => command.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
