namespace Xapi.Server.Operations;

/// <summary>Which host of a pool a message runs on.</summary>
public enum HostSelection
{
    /// <summary>The host the object is on: a VM's <c>resident_on</c> (its lifecycle once started), a PBD's <c>host</c>.</summary>
    ResidentHost,

    /// <summary>The host a parameter names (<c>VM.start_on</c>'s <c>host</c>).</summary>
    NamedHost,

    /// <summary>A host the master picks for the VM: live, enabled, reaching its disks and networks, with the most free memory, its affinity first.</summary>
    ChosenHost,

    /// <summary>
    /// A host where the object's SR (an SR, or a VDI's) is plugged, as real masters forward SR and
    /// VDI operations: this one when it is, else the host of an attached PBD (a member's local SR).
    /// </summary>
    StorageHost,
}

/// <summary>
/// Declares, beside a message's implementation, where in a pool it runs: on the master, a call
/// whose host is another member is forwarded there (after the operation stage, which stays at the
/// master, as real hosts take their locks there). <c>[RunsOn(HostSelection.ResidentHost)]</c> on
/// <c>VM.hard_shutdown</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public sealed class RunsOnAttribute(HostSelection selection) : Attribute
{
    public HostSelection Selection { get; } = selection;

    /// <summary>The parameter naming the object (or the host, for <see cref="HostSelection.NamedHost"/>); by default the first of its type.</summary>
    public string? On { get; init; }
}
