using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Api;

/// <summary>
/// <c>network.create</c> as real hosts complete it: an empty bridge gets the next free
/// <c>xapiN</c>; a bridge name the host's own devices could clash with (longer than 15
/// characters, or starting with <c>xen</c>, <c>xapi</c>, <c>vif</c>, <c>tap</c>, <c>eth</c>) is
/// refused, as is one another network already has; an MTU of 0 or less becomes 1500.
/// </summary>
public sealed class NetworkCreation : ICreateRule
{
    private const int MaxBridgeNameLength = 15;
    private const string GeneratedBridgePrefix = "xapi";
    private const long DefaultMtu = 1500;
    private static readonly string[] ReservedBridgePrefixes = ["xen", GeneratedBridgePrefix, "vif", "tap", "eth"];

    // Like real hosts, the numbering restarts with the daemon and skips names in use.
    private long _nextBridgeNumber;

    public ClassMeta Class => NetworkRef.Class;

    public void Complete(CallContext call, Transaction tx, object?[] values)
    {
        var network = new NetworkValues(values);
        var inUse = tx.All<NetworkRecord>().Select(n => n.Bridge).ToHashSet(StringComparer.Ordinal);
        if (network.Bridge.Length == 0)
        {
            string candidate;
            do
            {
                var number = Interlocked.Increment(ref _nextBridgeNumber) - 1;
                candidate = GeneratedBridgePrefix + number.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            while (inUse.Contains(candidate));
            network.Bridge = candidate;
        }
        else
        {
            if (network.Bridge.Length > MaxBridgeNameLength || ReservedBridgePrefixes.Any(p => network.Bridge.StartsWith(p, StringComparison.Ordinal)))
            {
                throw XenApiErrors.InvalidValue(Class.Fields[NetworkFields.Bridge].Name, network.Bridge);
            }
            if (inUse.Contains(network.Bridge))
            {
                throw XenApiErrors.BridgeNameExists(network.Bridge);
            }
        }
        if (network.MTU <= 0)
        {
            network.MTU = DefaultMtu;
        }
    }
}
