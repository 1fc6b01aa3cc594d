namespace Xapi.Xenops;

/// <summary>
/// A backend refused or failed an atomic operation. The daemon maps each subclass to the XenAPI
/// error the real server answers (as xapi maps xenopsd's errors); the seam knows no error codes.
/// </summary>
public abstract class XenopsException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>No domain with this VM uuid exists on the backend.</summary>
public sealed class DomainNotFoundException(Guid uuid) : XenopsException($"no domain for VM {uuid}")
{
    public Guid Uuid { get; } = uuid;
}

/// <summary>A domain for this VM uuid exists already (one domain per VM per host).</summary>
public sealed class DomainAlreadyExistsException(Guid uuid) : XenopsException($"a domain for VM {uuid} exists already")
{
    public Guid Uuid { get; } = uuid;
}

/// <summary>The domain is not in a state where the operation applies (e.g. unpause of a shut-down domain).</summary>
public sealed class DomainStateException(Guid uuid, string operation, string expected, DomainPowerState actual)
    : XenopsException($"{operation} of VM {uuid} needs {expected}, but the domain is {actual}")
{
    public Guid Uuid { get; } = uuid;

    public string Operation { get; } = operation;

    public string Expected { get; } = expected;

    public DomainPowerState Actual { get; } = actual;
}

/// <summary>
/// The host cannot give a domain the memory it needs even with every balloonable domain squeezed
/// to dynamic_min; xapi answers HOST_NOT_ENOUGH_FREE_MEMORY [needed, available] with these bytes.
/// </summary>
public sealed class NotEnoughMemoryException(long neededBytes, long availableBytes)
    : XenopsException($"not enough free memory: {neededBytes} bytes needed, {availableBytes} available")
{
    public long NeededBytes { get; } = neededBytes;

    public long AvailableBytes { get; } = availableBytes;
}

/// <summary>The domain has no device at this position.</summary>
public sealed class DeviceNotFoundException(Guid uuid, string device) : XenopsException($"VM {uuid} has no device {device}")
{
    public Guid Uuid { get; } = uuid;

    public string Device { get; } = device;
}

/// <summary>A device is already plugged at this position.</summary>
public sealed class DeviceAlreadyExistsException(Guid uuid, string device) : XenopsException($"VM {uuid} already has device {device}")
{
    public Guid Uuid { get; } = uuid;

    public string Device { get; } = device;
}

/// <summary>Eject of a disk that is not removable media, eject of an empty drive, or insert into a full one.</summary>
public sealed class MediaException(Guid uuid, string device, string reason) : XenopsException($"VM {uuid} device {device}: {reason}")
{
    public Guid Uuid { get; } = uuid;

    public string Device { get; } = device;

    public string Reason { get; } = reason;
}

/// <summary>A request the backend cannot satisfy as asked (vCPUs beyond VCPUs_max, a target outside the dynamic range, a bad config).</summary>
public sealed class InvalidDomainRequestException(Guid uuid, string message) : XenopsException($"VM {uuid}: {message}")
{
    public Guid Uuid { get; } = uuid;
}

/// <summary>A suspend image that is not one, is damaged, or belongs to another VM.</summary>
public sealed class SuspendImageException(string message, Exception? inner = null) : XenopsException(message, inner);

/// <summary>
/// An event subscriber fell further behind than the backend keeps events for; the stream ends
/// with this, and the subscriber resynchronises by listing domains (as xapi does after xenopsd
/// restarts).
/// </summary>
public sealed class EventStreamOverflowException(int capacity)
    : XenopsException($"the event subscriber fell {capacity} events behind; resynchronise with ListDomainsAsync")
{
    public int Capacity { get; } = capacity;
}

/// <summary>A migration stream that is not one, is damaged, belongs to another VM, or ended early.</summary>
public sealed class MigrationStreamException(string message, Exception? inner = null) : XenopsException(message, inner);

/// <summary>This backend cannot move a running domain to another host.</summary>
public sealed class MigrationNotSupportedException(string backend)
    : XenopsException($"live migration is not supported by the {backend} backend yet");
