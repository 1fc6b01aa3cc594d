namespace Xapi.Storage.Tests.Nfs;

/// <summary>
/// The NFS server the tests use: nfs-ganesha started by <c>scripts/nfs-sandbox.sh</c>, which runs
/// the test command inside a private network namespace with the server on 127.0.0.1 and sets
/// <c>NFS_SANDBOX_URL</c> and <c>NFS_SANDBOX_DIR</c>. Outside it the tests are skipped, or fail
/// when <c>XAPI_NFS_TESTS=required</c> (as scripts/test.sh sets).
/// </summary>
internal static class NfsSandbox
{
    public const string Server = "127.0.0.1";
    public const string ServerPath = "/export";

    /// <summary>The export's directory as the server's filesystem sees it.</summary>
    public static string Directory { get; } = Environment.GetEnvironmentVariable("NFS_SANDBOX_DIR") ?? "";

    public static string Url { get; } = Environment.GetEnvironmentVariable("NFS_SANDBOX_URL") ?? "";

    public static void Require()
    {
        if (Url == $"nfs://{Server}{ServerPath}" && System.IO.Directory.Exists(Directory))
        {
            return;
        }
        const string how = "run inside the NFS sandbox: scripts/nfs-sandbox.sh <scratch> -- dotnet test tests/Xapi.Storage.Tests --no-build --filter TestCategory=Nfs";
        if (Environment.GetEnvironmentVariable("XAPI_NFS_TESTS") == "required")
        {
            Assert.Fail($"no NFS server: {how}");
        }
        Assert.Ignore($"no NFS server: {how}");
    }
}
