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
            var token = "";
            while (Status(await run.CallAsync("task.get_status", task).ConfigureAwait(false)) == "pending")
            {
                var batch = await run.CallAsync("event.from", new[] { $"task/{task}" }, token, 30.0).ConfigureAwait(false) as IReadOnlyDictionary<object, object?>;
                token = batch?.GetValueOrDefault("token") as string ?? token;
            }
            var record = (IReadOnlyDictionary<object, object?>)(await run.CallAsync("task.get_record", task).ConfigureAwait(false))!;
            switch (Status(record.GetValueOrDefault("status")))
            {
                case "cancelling" or "cancelled":
                    throw new XenApiException(ErrorCodes.TaskCancelled, task);
                case "failure":
                    var info = (record.GetValueOrDefault("error_info") as IEnumerable<object?> ?? []).Select(i => i as string ?? "").ToArray();
                    throw info.Length == 0 ? new XenApiException(ErrorCodes.InternalError) : new XenApiException(info[0], info[1..]);
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

    private static string Status(object? value) => (value as string ?? "").ToLowerInvariant();
}
