using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// A file moved between the client and this server's HTTP handlers under a task, as real xe's
/// <c>track_http_operation</c> does: the server names a task in the URL it asks the client to PUT
/// or GET, then waits both for the client's answer and for the task, and the task says how it went.
/// </summary>
internal static class StorageTransfers
{
    private const string Success = "success";

    // A client that failed may still have reached the handler, which then fails the task with the
    // reason; real servers give it a second before reporting the client's failure as such.
    private static readonly TimeSpan HandlerGrace = TimeSpan.FromSeconds(1);

    public static async ValueTask TrackAsync(CliRun run, string label, bool upload, string fileName, Func<string, string> url)
    {
        var task = (string)(await run.CallAsync("task.create", label, "").ConfigureAwait(false))!;
        using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(run.Cancellation);
        try
        {
            var finished = CliTasks.UntilFinishedAsync(run, task, stopWaiting.Token);
            var clientOk = upload
                ? await run.Console.HttpPutAsync(fileName, url(task)).ConfigureAwait(false)
                : await run.Console.HttpGetAsync(fileName, url(task)).ConfigureAwait(false);
            if (clientOk)
            {
                await finished.ConfigureAwait(false);
                if ((string)(await run.CallAsync("task.get_status", task).ConfigureAwait(false))! == Success)
                {
                    return;
                }
                throw await TaskErrorAsync(run, task, ErrorCodes.InternalError).ConfigureAwait(false);
            }
            await Task.WhenAny(finished, Task.Delay(HandlerGrace, run.Cancellation)).ConfigureAwait(false);
            throw await TaskErrorAsync(run, task, ErrorCodes.ClientError).ConfigureAwait(false);
        }
        finally
        {
            await stopWaiting.CancelAsync().ConfigureAwait(false);
            try
            {
                await run.CallAsync("task.destroy", task).ConfigureAwait(false);
            }
            catch (Exception e) when (e is XenApiException or OperationCanceledException)
            {
                // Gone already (its session ended with the client); nothing is left to tidy.
            }
        }
    }

    private static async ValueTask<XenApiException> TaskErrorAsync(CliRun run, string task, string whenNone) =>
        CliTasks.ErrorOf(await run.CallAsync("task.get_error_info", task).ConfigureAwait(false), whenNone);
}
