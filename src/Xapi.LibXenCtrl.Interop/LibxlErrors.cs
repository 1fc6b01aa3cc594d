using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>libxl_error (Xen 4.17 _libxl_types.h); the values are checked against the headers by a test.</summary>
public enum LibxlError
{
    Nonspecific = -1,
    Version = -2,
    Fail = -3,
    NotImplemented = -4,
    NoMemory = -5,
    Invalid = -6,
    BadFail = -7,
    GuestTimedOut = -8,
    TimedOut = -9,
    NoParavirt = -10,
    NotReady = -11,
    OseventRegFail = -12,
    BufferFull = -13,
    UnknownChild = -14,
    LockFail = -15,
    JsonConfigEmpty = -16,
    DeviceExists = -17,
    CheckpointDevopsDoesNotMatch = -18,
    CheckpointDeviceNotSupported = -19,
    VnumaConfigInvalid = -20,
    DomainNotFound = -21,
    Aborted = -22,
    NotFound = -23,
    DomainDestroyed = -24,
    FeatureRemoved = -25,
    ProtocolErrorQmp = -26,
    UnknownQmpError = -27,
    QmpGenericError = -28,
    QmpCommandNotFound = -29,
    QmpDeviceNotActive = -30,
    QmpDeviceNotFound = -31,
    QemuApi = -32,
}

/// <summary>
/// A libxl call answered an error code. Subclasses name the codes callers act on; the rest stay
/// this type with <see cref="Error"/> set. A seam exception of its own kind (a domain that is not
/// there) is what <see cref="XenBackend"/> turns these into.
/// </summary>
public class LibxlException : XenopsException
{
    public LibxlException(string function, int code, string? detail = null)
        : base($"{function} failed: {NameOf(code)} ({code}){(detail is null ? "" : ": " + detail)}")
    {
        Function = function;
        Code = code;
    }

    public string Function { get; }

    /// <summary>The raw return value (negative).</summary>
    public int Code { get; }

    /// <summary>The code as a known libxl_error, or null for one this version does not define.</summary>
    public LibxlError? Error => Enum.IsDefined(typeof(LibxlError), Code) ? (LibxlError)Code : null;

    /// <summary>The header's names, for messages an operator can search libxl's sources and logs for.</summary>
    public static IReadOnlyDictionary<LibxlError, string> CNames { get; } = new Dictionary<LibxlError, string>
    {
        [LibxlError.Nonspecific] = "ERROR_NONSPECIFIC",
        [LibxlError.Version] = "ERROR_VERSION",
        [LibxlError.Fail] = "ERROR_FAIL",
        [LibxlError.NotImplemented] = "ERROR_NI",
        [LibxlError.NoMemory] = "ERROR_NOMEM",
        [LibxlError.Invalid] = "ERROR_INVAL",
        [LibxlError.BadFail] = "ERROR_BADFAIL",
        [LibxlError.GuestTimedOut] = "ERROR_GUEST_TIMEDOUT",
        [LibxlError.TimedOut] = "ERROR_TIMEDOUT",
        [LibxlError.NoParavirt] = "ERROR_NOPARAVIRT",
        [LibxlError.NotReady] = "ERROR_NOT_READY",
        [LibxlError.OseventRegFail] = "ERROR_OSEVENT_REG_FAIL",
        [LibxlError.BufferFull] = "ERROR_BUFFERFULL",
        [LibxlError.UnknownChild] = "ERROR_UNKNOWN_CHILD",
        [LibxlError.LockFail] = "ERROR_LOCK_FAIL",
        [LibxlError.JsonConfigEmpty] = "ERROR_JSON_CONFIG_EMPTY",
        [LibxlError.DeviceExists] = "ERROR_DEVICE_EXISTS",
        [LibxlError.CheckpointDevopsDoesNotMatch] = "ERROR_CHECKPOINT_DEVOPS_DOES_NOT_MATCH",
        [LibxlError.CheckpointDeviceNotSupported] = "ERROR_CHECKPOINT_DEVICE_NOT_SUPPORTED",
        [LibxlError.VnumaConfigInvalid] = "ERROR_VNUMA_CONFIG_INVALID",
        [LibxlError.DomainNotFound] = "ERROR_DOMAIN_NOTFOUND",
        [LibxlError.Aborted] = "ERROR_ABORTED",
        [LibxlError.NotFound] = "ERROR_NOTFOUND",
        [LibxlError.DomainDestroyed] = "ERROR_DOMAIN_DESTROYED",
        [LibxlError.FeatureRemoved] = "ERROR_FEATURE_REMOVED",
        [LibxlError.ProtocolErrorQmp] = "ERROR_PROTOCOL_ERROR_QMP",
        [LibxlError.UnknownQmpError] = "ERROR_UNKNOWN_QMP_ERROR",
        [LibxlError.QmpGenericError] = "ERROR_QMP_GENERIC_ERROR",
        [LibxlError.QmpCommandNotFound] = "ERROR_QMP_COMMAND_NOT_FOUND",
        [LibxlError.QmpDeviceNotActive] = "ERROR_QMP_DEVICE_NOT_ACTIVE",
        [LibxlError.QmpDeviceNotFound] = "ERROR_QMP_DEVICE_NOT_FOUND",
        [LibxlError.QemuApi] = "ERROR_QEMU_API",
    };

    private static string NameOf(int code) =>
        Enum.IsDefined(typeof(LibxlError), code) ? CNames[(LibxlError)code] : "unknown libxl error";

    /// <summary>Throws the typed exception for a negative <paramref name="rc"/>; returns it otherwise.</summary>
    public static int ThrowIfFailed(int rc, string function, uint? domid = null) =>
        rc >= 0 ? rc : throw Create(rc, function, domid);

    public static LibxlException Create(int rc, string function, uint? domid = null) => (LibxlError)rc switch
    {
        LibxlError.DomainNotFound or LibxlError.DomainDestroyed => new LibxlDomainNotFoundException(function, rc, domid),
        LibxlError.NoMemory => new LibxlOutOfMemoryException(function, rc),
        LibxlError.Invalid or LibxlError.JsonConfigEmpty or LibxlError.VnumaConfigInvalid => new LibxlInvalidArgumentException(function, rc),
        LibxlError.TimedOut or LibxlError.GuestTimedOut => new LibxlTimeoutException(function, rc),
        LibxlError.DeviceExists => new LibxlDeviceExistsException(function, rc),
        LibxlError.NoParavirt => new LibxlNoParavirtException(function, rc, domid),
        _ => new LibxlException(function, rc, domid is null ? null : $"domain {domid}"),
    };
}

/// <summary>ERROR_DOMAIN_NOTFOUND / ERROR_DOMAIN_DESTROYED: the domid names no (living) domain.</summary>
public sealed class LibxlDomainNotFoundException(string function, int code, uint? domid)
    : LibxlException(function, code, domid is null ? null : $"domain {domid}")
{
    public uint? DomId { get; } = domid;
}

/// <summary>ERROR_NOMEM: libxl could not allocate (its own memory, or the host's for a domain).</summary>
public sealed class LibxlOutOfMemoryException(string function, int code) : LibxlException(function, code);

/// <summary>ERROR_INVAL and config errors: the arguments or the domain config were refused.</summary>
public sealed class LibxlInvalidArgumentException(string function, int code) : LibxlException(function, code);

/// <summary>ERROR_TIMEDOUT / ERROR_GUEST_TIMEDOUT.</summary>
public sealed class LibxlTimeoutException(string function, int code) : LibxlException(function, code);

/// <summary>ERROR_DEVICE_EXISTS.</summary>
public sealed class LibxlDeviceExistsException(string function, int code) : LibxlException(function, code);

/// <summary>ERROR_NOPARAVIRT: the guest has no PV drivers to receive a shutdown or reboot request.</summary>
public sealed class LibxlNoParavirtException(string function, int code, uint? domid)
    : LibxlException(function, code, domid is null ? null : $"domain {domid}");
