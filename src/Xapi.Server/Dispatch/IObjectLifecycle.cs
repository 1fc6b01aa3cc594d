using Xapi.Model;

namespace Xapi.Server.Dispatch;

/// <summary>
/// A class whose implicit <c>create</c> and <c>destroy</c> do more than write a row: on real
/// hosts <c>VDI.create</c> asks the storage driver for a disk and <c>PBD.destroy</c> refuses
/// while plugged. The record arrives parsed as the implicit create would store it.
/// </summary>
public interface IObjectLifecycle
{
    ClassMeta Class { get; }

    /// <param name="values">The new row's values: the record's fields over the datamodel defaults.</param>
    ValueTask<string> CreateAsync(CallContext context, object?[] values);

    ValueTask DestroyAsync(CallContext context, string reference);

    /// <summary>Where in a pool the class's create and destroy run (<see cref="Operations.RunsOnAttribute"/>); null: where they are called.</summary>
    Operations.HostSelection? RunsOn => null;
}
