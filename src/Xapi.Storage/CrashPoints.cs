namespace Xapi.Storage;

/// <summary>
/// Named points inside multi-step operations where a test can have the daemon kill itself
/// with SIGKILL (<c>XAPI_CRASH_AT=&lt;name&gt;</c>), so crash recovery is tested at exactly
/// the step that matters rather than at whatever moment a timer happens to hit.
/// </summary>
public static class CrashPoints
{
    public const string Variable = "XAPI_CRASH_AT";

    private static readonly string? Armed = Environment.GetEnvironmentVariable(Variable);

    public static void Hit(string name)
    {
        if (Armed is not null && Armed == name)
        {
            Console.Out.Flush();
            System.Diagnostics.Process.GetCurrentProcess().Kill();
        }
    }
}
