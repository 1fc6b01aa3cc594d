namespace Xapi.Server.Pool;

/// <summary>
/// Whether this host is its pool's master or a member, and where the master is: the data dir's
/// <c>pool.conf</c>, holding <c>master</c> or <c>slave:ADDRESS</c> as on real hosts.
/// </summary>
public sealed record PoolRole(string? MasterAddress)
{
    public const string FileName = "pool.conf";
    private const string MasterLine = "master";
    private const string MemberPrefix = "slave:";

    public static readonly PoolRole Master = new((string?)null);

    public bool IsMaster => MasterAddress is null;

    public static PoolRole Read(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        if (!File.Exists(path))
        {
            return Master;
        }
        var line = File.ReadAllText(path).Trim();
        if (line == MasterLine)
        {
            return Master;
        }
        if (line.StartsWith(MemberPrefix, StringComparison.Ordinal) && line.Length > MemberPrefix.Length)
        {
            return new PoolRole(line[MemberPrefix.Length..]);
        }
        throw new Hosting.StartupException($"{path} holds '{line}'; it must say '{MasterLine}' or '{MemberPrefix}<master address>'.");
    }

    public void Write(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        var temp = path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(System.Text.Encoding.UTF8.GetBytes(IsMaster ? MasterLine : MemberPrefix + MasterAddress));
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }
}
