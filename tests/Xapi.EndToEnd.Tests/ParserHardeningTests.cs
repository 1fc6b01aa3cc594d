using Xapi.Protocol;
using Xapi.Server.Tests;

namespace Xapi.EndToEnd.Tests;

/// <summary>Inputs that once overflowed the daemon's stack: answered with an error, and the daemon lives on.</summary>
public class ParserHardeningTests
{
    private const string Password = "hardening-password";

    [Test]
    public async Task Deeply_nested_where_expressions_are_invalid_values_and_the_daemon_keeps_serving()
    {
        var dataDir = Directory.CreateTempSubdirectory("xapi-hardening-").FullName;
        using var cleanup = new DirectoryCleanup(dataDir);
        using var daemon = await DaemonProcess.StartAsync(dataDir, Password);
        string[] expressions =
        [
            new string('(', 60_000) + "true" + new string(')', 60_000),
            string.Concat(Enumerable.Repeat("not ", 70_000)) + "true",
        ];
        foreach (var dialect in new[] { RpcDialect.JsonRpcV2, RpcDialect.XmlRpc })
        {
            using var client = new XenApiClient(daemon.Uri, dialect);
            await client.LoginAsync("root", Password);
            foreach (var expression in expressions)
            {
                var e = await XenApiAssert.FailsAsync(() => client.InvokeAsync("VM.get_all_records_where", expression), "INVALID_VALUE");
                Assert.That(e.Parameters[1], Does.Contain("nested deeper than"));
            }
            Assert.That(await client.InvokeAsync("pool.get_all"), Is.Not.Empty, "the daemon still answers");
        }
        Assert.That(daemon.HasExited, Is.False);
    }
}
