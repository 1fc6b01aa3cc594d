using System.Security.Cryptography;
using System.Text;

namespace Xapi.Server.Pool;

/// <summary>
/// The secret the hosts of a pool share: members prove with it that they belong when they reach
/// the master's database, as real hosts do with their <c>ptoken</c>. Made at first start; a
/// joining host takes the pool's. Its shape is the real one (three uuids joined by '/'), since it
/// travels as an HTTP cookie.
/// </summary>
public sealed class PoolSecret
{
    public const string FileName = "ptoken";

    /// <summary>The cookie pool-internal HTTP requests carry it in.</summary>
    public const string CookieName = "pool_secret";

    private readonly string _path;
    private string _value;

    private PoolSecret(string path, string value)
    {
        _path = path;
        _value = value;
    }

    public string Value => Volatile.Read(ref _value);

    public static PoolSecret LoadOrCreate(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        if (File.Exists(path) && File.ReadAllText(path).Trim() is { Length: > 0 } existing)
        {
            return new PoolSecret(path, existing);
        }
        var secret = new PoolSecret(path, "");
        secret.Replace(string.Join('/', Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid()));
        return secret;
    }

    /// <summary>Whether <paramref name="candidate"/> is the secret (compared in constant time).</summary>
    public bool Matches(string? candidate) =>
        candidate is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(candidate), Encoding.UTF8.GetBytes(Value));

    /// <summary>Takes another secret (the pool's, when this host joins one), on disk before in memory.</summary>
    public void Replace(string secret)
    {
        var temp = _path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(Encoding.UTF8.GetBytes(secret));
            file.Flush(flushToDisk: true);
        }
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        File.Move(temp, _path, overwrite: true);
        Volatile.Write(ref _value, secret);
    }
}
