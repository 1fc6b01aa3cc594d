namespace Xapi.Server.Hosting;

/// <summary>Keys of <c>host.software_version</c> that hosts compare when one joins another's pool.</summary>
public static class SoftwareVersionKeys
{
    public const string ProductVersion = "product_version";
    public const string PlatformVersion = "platform_version";
    public const string ProductBrand = "product_brand";
    public const string PlatformName = "platform_name";
    public const string Xapi = "xapi";
    public const string DbSchema = "db_schema";
}
