using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Xapi.Server.Sessions;

/// <summary>
/// The local root password, kept as a salted PBKDF2-SHA256 hash in the data dir. Never stores
/// or logs the password itself.
/// </summary>
public sealed class PasswordStore
{
    private const string Scheme = "pbkdf2-sha256";
    private readonly string _path;
    private readonly int _iterations;
    private readonly object _lock = new();
    private string _stored;

    private PasswordStore(string path, int iterations, string stored)
    {
        _path = path;
        _iterations = iterations;
        _stored = stored;
    }

    private const string FileName = "root-password";

    /// <summary>Refuses a stored password file that holds no usable hash, before anything is written.</summary>
    public static void Check(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        if (File.Exists(path) && !TryParse(File.ReadAllText(path).Trim(), out _, out _, out _))
        {
            // Every login would fail; say so now rather than answer each one with an internal error.
            throw new Hosting.StartupException(
                $"{path} does not hold a {Scheme} password hash; restore it from a backup, or move it aside and start with --root-password to set a new root password.");
        }
    }

    /// <summary>Loads the stored hash, or sets the first-boot password (returned when it was generated).</summary>
    public static PasswordStore Open(string dataDir, string? initialPassword, int iterations, out string? generatedPassword)
    {
        var path = Path.Combine(dataDir, FileName);
        generatedPassword = null;
        if (File.Exists(path))
        {
            Check(dataDir);
            return new PasswordStore(path, iterations, File.ReadAllText(path).Trim());
        }
        var password = initialPassword;
        if (string.IsNullOrEmpty(password))
        {
            password = generatedPassword = Convert.ToBase64String(RandomNumberGenerator.GetBytes(12)).TrimEnd('=').Replace('/', 'x').Replace('+', 'y');
        }
        var store = new PasswordStore(path, iterations, Hash(password, iterations));
        store.Save();
        return store;
    }

    public bool Verify(string password)
    {
        string stored;
        lock (_lock)
        {
            stored = _stored;
        }
        if (!TryParse(stored, out var iterations, out var salt, out var expected))
        {
            return false;
        }
        var actual = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, expected.Length);
        return CryptographicOperations.FixedTimeEquals(actual, expected);
    }

    private static bool TryParse(string stored, out int iterations, out byte[] salt, out byte[] hash)
    {
        iterations = 0;
        salt = hash = [];
        var parts = stored.Split('$');
        if (parts.Length != 4 || parts[0] != Scheme
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out iterations) || iterations <= 0)
        {
            return false;
        }
        try
        {
            salt = Convert.FromBase64String(parts[2]);
            hash = Convert.FromBase64String(parts[3]);
        }
        catch (FormatException)
        {
            return false;
        }
        return salt.Length > 0 && hash.Length > 0;
    }

    public void Change(string newPassword)
    {
        lock (_lock)
        {
            _stored = Hash(newPassword, _iterations);
            Save();
        }
    }

    private void Save()
    {
        var temp = _path + ".tmp";
        File.WriteAllText(temp, _stored + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        File.Move(temp, _path, overwrite: true);
    }

    private static string Hash(string password, int iterations)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);
        return string.Create(CultureInfo.InvariantCulture, $"{Scheme}${iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}");
    }
}
