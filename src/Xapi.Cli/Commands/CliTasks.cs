using Xapi.Model;

namespace Xapi.Cli.Commands;

/// <summary>Real xe's <c>waiter</c>: follows an asynchronous call's task to its end through event.from.</summary>
public static class CliTasks
{
    /// <summary>Waits for the task, destroys it, and returns its result; a failed or cancelled task throws its error.</summary>
    public static async ValueTask<object?> WaitAsync(CliRun run, string task)
    {
        try
        {
            await UntilFinishedAsync(run, task, CancellationToken.None).ConfigureAwait(false);
            var record = (IReadOnlyDictionary<object, object?>)(await run.CallAsync("task.get_record", task).ConfigureAwait(false))!;
            switch (Status(record.GetValueOrDefault("status")))
            {
                case "cancelling" or "cancelled":
                    throw new XenApiException(ErrorCodes.TaskCancelled, task);
                case "failure":
                    throw ErrorOf(record.GetValueOrDefault("error_info"), ErrorCodes.InternalError);
                default:
                    return record.GetValueOrDefault("result");
            }
        }
        finally
        {
            try
            {
                await run.CallAsync("task.destroy", task).ConfigureAwait(false);
            }
            catch (XenApiException)
            {
                // Gone already: nothing to tidy.
            }
        }
    }

    /// <summary>Calls <c>Async.&lt;method&gt;</c> and waits for its task.</summary>
    public static async ValueTask<object?> RunAsync(CliRun run, string method, params object?[] args)
    {
        var task = (string)(await run.CallAsync("Async." + method, args).ConfigureAwait(false))!;
        return await WaitAsync(run, task).ConfigureAwait(false);
    }

    // How long one wait for a change to the task lasts before its status is looked at again.
    private const double EventTimeoutSeconds = 5.0;

    /// <summary>Returns once the task is no longer pending (or the wait is cancelled), following it through events rather than polling.</summary>
    public static async Task UntilFinishedAsync(CliRun run, string task, CancellationToken cancellation)
    {
        object?[] classes = ["task/" + task];
        var token = "";
        while (!cancellation.IsCancellationRequested
            && Status(await run.CallAsync("task.get_status", task).ConfigureAwait(false)) == "pending")
        {
            var batch = await run.CallAsync("event.from", classes, token, EventTimeoutSeconds).ConfigureAwait(false) as IReadOnlyDictionary<object, object?>;
            token = batch?.GetValueOrDefault("token") as string ?? token;
        }
    }

    /// <summary>A task's <c>error_info</c> as the error it reports; <paramref name="whenNone"/> when it recorded none.</summary>
    public static XenApiException ErrorOf(object? errorInfo, string whenNone)
    {
        var info = (errorInfo as IEnumerable<object?> ?? []).Select(i => i as string ?? "").ToArray();
        return info.Length == 0 ? new XenApiException(whenNone) : new XenApiException(info[0], info[1..]);
    }

    private static string Status(object? value) => (value as string ?? "").ToLowerInvariant();
}
