using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>
/// A file moved between the client and this server's HTTP handlers under a task, as real xe's
/// <c>track_http_operation</c> does: the server names a task in the URL it asks the client to PUT
/// or GET, then waits both for the client's answer and for the task, and the task says how it went.
/// </summary>
internal static class StorageTransfers
{
    private const string Pending = "pending";
    private const string Success = "success";

    // A client that failed may still have reached the handler, which then fails the task with the
    // reason; real servers give it a second before reporting the client's failure as such.
    private static readonly TimeSpan HandlerGrace = TimeSpan.FromSeconds(1);

    // How long one wait for a change to the task lasts before its status is looked at again.
    private const double EventTimeoutSeconds = 5.0;

    public static async ValueTask TrackAsync(CliRun run, string label, bool upload, string fileName, Func<string, string> url)
    {
        var task = (string)(await run.CallAsync("task.create", label, "").ConfigureAwait(false))!;
        using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(run.Cancellation);
        try
        {
            var finished = WaitForTaskAsync(run, task, stopWaiting.Token);
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

    private static async ValueTask<XenApiException> TaskErrorAsync(CliRun run, string task, string whenNone)
    {
        var info = (IReadOnlyList<object?>)(await run.CallAsync("task.get_error_info", task).ConfigureAwait(false))!;
        return info.Count == 0
            ? new XenApiException(whenNone)
            : new XenApiException((string)info[0]!, [.. info.Skip(1).Select(p => p as string ?? "")]);
    }

    /// <summary>Returns once the task is no longer pending, following it through events rather than polling.</summary>
    private static async Task WaitForTaskAsync(CliRun run, string task, CancellationToken cancellation)
    {
        object?[] classes = ["task/" + task];
        var token = "";
        while (!cancellation.IsCancellationRequested)
        {
            if ((string)(await run.CallAsync("task.get_status", task).ConfigureAwait(false))! != Pending)
            {
                return;
            }
            var changes = (IReadOnlyDictionary<object, object?>)(await run.CallAsync("event.from", classes, token, EventTimeoutSeconds).ConfigureAwait(false))!;
            token = (string)changes["token"]!;
        }
    }
}
