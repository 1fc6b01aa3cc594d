using System.Text.Json;

namespace Xapi.Server.Hosting;

/// <summary>
/// The data dir's inventory: the installation uuid from which this host's identity (its uuid and
/// the refs of its first-boot objects) derives.
/// </summary>
public static class Inventory
{
    public const string FileName = "inventory.json";
    private const string InstallationUuidKey = "INSTALLATION_UUID";

    public static string PathIn(string dataDir) => Path.Combine(dataDir, FileName);

    /// <summary>The installation uuid, or null when there is no inventory; a damaged one stops the start.</summary>
    public static string? Read(string dataDir)
    {
        var path = PathIn(dataDir);
        if (!File.Exists(path))
        {
            return null;
        }
        const string Advice = "restore it from a backup, or move it aside to rebuild it from the database";
        Dictionary<string, string>? inventory;
        try
        {
            inventory = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new StartupException($"{path} is not a valid inventory ({e.Message}); {Advice}.", e);
        }
        if (inventory?.GetValueOrDefault(InstallationUuidKey) is not { } uuid || !Guid.TryParseExact(uuid, "D", out _))
        {
            throw new StartupException($"{path} holds no valid {InstallationUuidKey}; {Advice}.");
        }
        return uuid;
    }

    public static void Write(string dataDir, string installationUuid)
    {
        var path = PathIn(dataDir);
        var temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(new Dictionary<string, string> { [InstallationUuidKey] = installationUuid }));
        File.Move(temp, path, overwrite: true);
    }
}
