namespace Xapi.Storage;

/// <summary>
/// The capability names SM drivers declare (SMAPIv1's DRIVER_INFO list), as they appear in the
/// <c>SM</c> record's <c>capabilities</c> and <c>features</c>. Names the real server does not
/// know are dropped from the record, so only these exist.
/// </summary>
public static class SmFeatures
{
    public const string SrProbe = "SR_PROBE";
    public const string SrUpdate = "SR_UPDATE";
    public const string SrScan = "SR_SCAN";
    public const string SrAttach = "SR_ATTACH";
    public const string SrDetach = "SR_DETACH";
    public const string SrSupportsLocalCaching = "SR_SUPPORTS_LOCAL_CACHING";
    public const string SrCaching = "SR_CACHING";
    public const string SrTrim = "SR_TRIM";
    public const string VdiCreate = "VDI_CREATE";
    public const string VdiDelete = "VDI_DELETE";
    public const string VdiAttach = "VDI_ATTACH";
    public const string VdiDetach = "VDI_DETACH";
    public const string VdiActivate = "VDI_ACTIVATE";
    public const string VdiDeactivate = "VDI_DEACTIVATE";
    public const string VdiUpdate = "VDI_UPDATE";
    public const string VdiClone = "VDI_CLONE";
    public const string VdiSnapshot = "VDI_SNAPSHOT";
    public const string VdiResize = "VDI_RESIZE";
    public const string VdiResizeOnline = "VDI_RESIZE_ONLINE";
    public const string VdiMirror = "VDI_MIRROR";
    public const string VdiIntroduce = "VDI_INTRODUCE";
    public const string VdiGenerateConfig = "VDI_GENERATE_CONFIG";
    public const string VdiResetOnBoot = "VDI_RESET_ON_BOOT";
    public const string VdiConfigCbt = "VDI_CONFIG_CBT";
    public const string VdiCompose = "VDI_COMPOSE";
    public const string VdiRevert = "VDI_REVERT";
    public const string ThinProvisioning = "THIN_PROVISIONING";
}

/// <summary>A capability with its version (<c>VDI_RESET_ON_BOOT/2</c> is version 2).</summary>
public readonly record struct SmFeature(string Name, long Version = 1)
{
    public override string ToString() => Version == 1 ? Name : $"{Name}/{Version}";
}

/// <summary>What a driver says about itself: the <c>SM</c> record of its type.</summary>
public sealed record SmDescription(
    string Type,
    string NameLabel,
    string NameDescription,
    string Vendor,
    string RequiredApiVersion,
    IReadOnlyList<SmFeature> Features,
    IReadOnlyList<KeyValuePair<string, string>> Configuration)
{
    public const string DriverVersion = "1.0";
    public const string Copyright = "(C) the xapi-dotnet authors";

    public bool Has(string feature) => Features.Any(f => f.Name == feature);
}
