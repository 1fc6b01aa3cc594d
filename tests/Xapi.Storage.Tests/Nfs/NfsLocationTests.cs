using Microsoft.Extensions.Logging.Abstractions;
using Xapi.Storage.Drivers.Nfs;

namespace Xapi.Storage.Tests.Nfs;

/// <summary>device_config of the nfs driver: every value that reaches libnfs or an nfs:// URL is checked before any network call.</summary>
public sealed class NfsLocationTests
{
    private static Dictionary<string, string> Config(string? server = "127.0.0.1", string? path = "/export", string? version = null)
    {
        var config = new Dictionary<string, string>();
        if (server is not null)
        {
            config[NfsLocation.ServerKey] = server;
        }
        if (path is not null)
        {
            config[NfsLocation.ServerPathKey] = path;
        }
        if (version is not null)
        {
            config[NfsLocation.NfsVersionKey] = version;
        }
        return config;
    }

    private static readonly Dictionary<string, string> NoSmConfig = [];

    [TestCase("127.0.0.1/export")]
    [TestCase("127.0.0.1?uid=0")]
    [TestCase("server name")]
    [TestCase("user@server")]
    [TestCase("server#x")]
    [TestCase("127.0.0.1\n")]
    [TestCase("1.2.3")]
    [TestCase("::1%lo")]
    [TestCase("-server")]
    public void A_server_that_is_not_a_host_name_or_IP_address_is_refused(string server)
    {
        var error = Assert.Throws<SmException>(() => NfsLocation.Parse(Config(server), NoSmConfig));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.InvalidArg));
    }

    [TestCase("127.0.0.1", "nfs://127.0.0.1/export/x")]
    [TestCase("filer.example.com", "nfs://filer.example.com/export/x")]
    [TestCase("::1", "nfs://[::1]/export/x")]
    public void Host_names_and_addresses_make_nfs_URLs(string server, string url)
    {
        Assert.That(NfsLocation.Parse(Config(server), NoSmConfig).UrlOf("/x"), Is.EqualTo(url));
    }

    [TestCase("export")]
    [TestCase("/export/../etc")]
    [TestCase("/export/./x")]
    [TestCase("/export//x")]
    [TestCase("/export/")]
    [TestCase("/exp?ort")]
    [TestCase("/exp%2e%2e")]
    [TestCase("/exp ort")]
    [TestCase("/exp#ort")]
    [TestCase("/exp\nort")]
    public void A_serverpath_that_is_not_an_absolute_normal_path_of_plain_characters_is_refused(string path)
    {
        var error = Assert.Throws<SmException>(() => NfsLocation.Parse(Config(path: path), NoSmConfig));
        Assert.That(error!.Code, Is.EqualTo(NfsErrors.ConfigServerPathBad));
    }

    [TestCase("/")]
    [TestCase("/export")]
    [TestCase("/srv/nfs/xcp-sr_1.a")]
    public void Absolute_normal_serverpaths_are_kept(string path)
    {
        Assert.That(NfsLocation.Parse(Config(path: path), NoSmConfig).ServerPath, Is.EqualTo(path));
    }

    [TestCase("4")]
    [TestCase("4.0")]
    [TestCase("4.1")]
    public void NFSv4_is_refused_saying_why(string version)
    {
        var error = Assert.Throws<SmException>(() => NfsLocation.Parse(Config(version: version), NoSmConfig));
        Assert.That(error!.Code, Is.EqualTo(NfsErrors.NfsVersion));
        Assert.That(error.Detail, Does.Contain("libnfs").And.Contain("nfsversion=3"));
    }

    [TestCase("2")]
    [TestCase("3.0 ")]
    public void An_unknown_nfsversion_is_refused(string version)
    {
        var error = Assert.Throws<SmException>(() => NfsLocation.Parse(Config(version: version), NoSmConfig));
        Assert.That(error!.Code, Is.EqualTo(NfsErrors.NfsVersion));
    }

    [Test]
    public void Nfsversion_3_or_none_is_accepted()
    {
        Assert.That(NfsLocation.Parse(Config(version: "3"), NoSmConfig).Server, Is.EqualTo("127.0.0.1"));
        Assert.That(NfsLocation.Parse(Config(), NoSmConfig).Server, Is.EqualTo("127.0.0.1"));
    }

    [Test]
    public void A_missing_server_or_serverpath_fails_with_SM_s_codes()
    {
        Assert.That(Assert.Throws<SmException>(() => NfsLocation.Parse(Config(server: null), NoSmConfig))!.Code, Is.EqualTo(SmErrors.ConfigServerMissing));
        Assert.That(Assert.Throws<SmException>(() => NfsLocation.Parse(Config(path: null), NoSmConfig))!.Code, Is.EqualTo(SmErrors.ConfigServerPathMissing));
        Assert.That(NfsLocation.Parse(Config(path: null), NoSmConfig, requireServerPath: false).ServerPath, Is.Empty);
    }

    [Test]
    public void An_SR_at_serverpath_itself_is_refused()
    {
        var error = Assert.Throws<SmException>(() => NfsLocation.Parse(Config(), new Dictionary<string, string> { [NfsLocation.NoSubdirKey] = "true" }));
        Assert.That(error!.Code, Is.EqualTo(SmErrors.InvalidArg));
    }

    [Test]
    public async Task The_driver_refuses_a_bad_serverpath_before_it_contacts_any_server()
    {
        // 192.0.2.1 (TEST-NET-1) answers nothing: reaching it would hang until the RPC timeout, not fail at once.
        var sr = new SrContext(Guid.NewGuid().ToString("D"), Config("192.0.2.1", "/export/../../etc"), NoSmConfig, Path.GetTempPath(), NullLogger.Instance);
        var started = System.Diagnostics.Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<SmException>(async () => await new NfsDriver().CreateAsync(sr, 0, default));
        Assert.That(error!.Code, Is.EqualTo(NfsErrors.ConfigServerPathBad));
        Assert.That(started.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)));
    }

    [Test]
    public void The_nfs_SM_record_is_NFSSR_s_with_the_ext_driver_s_features()
    {
        var description = new NfsDriver().Description;
        Assert.That(description.Type, Is.EqualTo("nfs"));
        Assert.That(description.NameLabel, Is.EqualTo("NFS VHD"));
        Assert.That(description.Has(SmFeatures.SrCaching) && !description.Has(SmFeatures.SrSupportsLocalCaching));
        Assert.That(description.Configuration.Select(c => c.Key), Is.EqualTo(new[] { "server", "serverpath", "nfsversion" }));
    }
}
