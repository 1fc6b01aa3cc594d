using Xapi.Storage.Drivers.Ext;

namespace Xapi.Storage.Tests.Nfs;

/// <summary>The chain scenarios on a local directory: the ext driver through the local file store.</summary>
public sealed class LocalChainDriverTests : ChainDriverScenarios
{
    private string _location = "";

    protected override ExtDriver Driver { get; } = new();

    protected override IReadOnlyDictionary<string, string> DeviceConfig => new Dictionary<string, string> { [ExtDriver.LocationKey] = _location };

    [SetUp]
    public void MakeLocation() => _location = Scratch();

    protected override string BackDoor(string srUuid) => Path.Combine(_location, srUuid);
}
