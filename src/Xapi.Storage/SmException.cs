namespace Xapi.Storage;

/// <summary>
/// A driver's failure, with SMAPI's numeric code (XE_SR_ERRORCODES): the server turns it into
/// what real hosts answer — <c>SR_BACKEND_FAILURE_&lt;code&gt; ["", message, detail]</c>, or the
/// named error a few codes map to (not implemented, SR not empty, VDI in use, …).
/// </summary>
public sealed class SmException(int code, string message, string detail = "") : Exception(message)
{
    public int Code { get; } = code;

    /// <summary>The third parameter of SR_BACKEND_FAILURE: what the tool said, for the administrator.</summary>
    public string Detail { get; } = detail;

    public static SmException Unimplemented(string operation) => new(SmErrors.Unimplemented, $"Operation '{operation}' not supported by this SR type");

    public static SmException InvalidArgument(string message) => new(SmErrors.InvalidArg, message);
}

/// <summary>The SMAPI error codes the drivers raise (numbers and texts as real SM drivers give them).</summary>
public static class SmErrors
{
    public const int InvalidArg = 1;
    public const int SrInUse = 16;
    public const int VdiInUse = 24;
    public const int Unimplemented = 38;
    public const int SrNotEmpty = 39;
    public const int SrScan = 40;
    public const int SrExists = 42;
    public const int VdiExists = 43;
    public const int SrNoSpace = 44;
    public const int VdiUnavailable = 46;
    public const int SrUnavailable = 47;
    public const int FileSrCreate = 61;
    public const int VdiRemove = 64;
    public const int VdiLoad = 65;
    public const int VdiType = 66;
    public const int VdiCreate = 78;
    public const int VdiSize = 79;
    public const int VdiClone = 81;
    public const int VdiSnapshot = 82;
    public const int ConfigDeviceMissing = 90;
    public const int ConfigLocationMissing = 94;
    public const int ConfigServerPathMissing = 101;
    public const int ConfigServerMissing = 102;
    public const int SnapshotChainTooLong = 109;
    public const int VdiResize = 110;
    public const int VdiMissing = 144;
    public const int Eio = 200;
    public const int IsoLocationStringError = 225;
    public const int IsoLocalPath = 226;

    public const string NoSpaceMessage = "There is insufficient space";
}

/// <summary>
/// The SR has no room for what was asked. Real hosts report it as <c>SR_BACKEND_FAILURE_44</c>;
/// this daemon answers <c>SR_FULL [requested; maximum]</c>, which clients already know from VM
/// operations and which says how much was missing.
/// </summary>
public sealed class SrFullException(long requested, long available) : Exception($"the SR needs {requested} bytes but has {available}")
{
    public long Requested { get; } = requested;

    public long Available { get; } = available;
}
