namespace Xapi.Server.Hosting;

/// <summary>The data dir must be a directory this user can write: the database, password and inventory live there.</summary>
public static class DataDirectory
{
    public static void Prepare(string dataDir)
    {
        var full = Path.GetFullPath(dataDir);
        if (File.Exists(full))
        {
            throw new StartupException($"the data dir {full} is a file, not a directory; point --data-dir at a directory (it holds the database, inventory and password).");
        }
        try
        {
            Directory.CreateDirectory(full);
            CheckWritable(full);
            var db = Path.Combine(full, "db");
            if (Directory.Exists(db))
            {
                CheckWritable(db);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StartupException($"the data dir {full} cannot be written ({e.Message}); make it (and its db directory) writable by the user running xapi-dotnet.", e);
        }
    }

    // The daemon writes here at every commit and compaction; finding out at the first write would
    // mean a daemon that answers and then fails every write.
    private static void CheckWritable(string directory)
    {
        var probe = Path.Combine(directory, $".write-check-{Environment.ProcessId}");
        using (new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose))
        {
        }
    }
}
