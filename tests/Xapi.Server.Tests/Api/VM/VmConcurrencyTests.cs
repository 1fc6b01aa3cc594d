using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>
/// Many clients cycling their VMs at once, with guests that answer instantly: every call must see
/// the state the previous call of the same client left, however the backend's events interleave.
/// </summary>
public class VmConcurrencyTests
{
    [TestCase("journal")]
    [TestCase("memory")]
    public async Task Sixteen_clients_cycling_start_and_clean_shutdown_always_find_their_VM_where_they_left_it(string database)
    {
        await using var daemon = await TestDaemon.StartAsync(o =>
        {
            o.Database = database;
            o.SimulatedGuestAgentDelay = TimeSpan.Zero;
            o.SimulatedShutdownDelay = TimeSpan.Zero;
        });
        var clients = new List<XenApiClient>();
        for (var i = 0; i < 16; i++)
        {
            clients.Add(await daemon.LoginAsync());
        }
        var cycles = 0;
        await Task.WhenAll(clients.Select((client, c) => Task.Run(async () =>
        {
            var vm = await client.CreateVmAsync($"cycling {c}", withDevices: false);
            for (var i = 0; i < 40; i++)
            {
                await client.InvokeAsync("VM.start", vm, false, false);
                await client.InvokeAsync("VM.clean_shutdown", vm);
                Interlocked.Increment(ref cycles);
            }
        })));
        Assert.That(cycles, Is.EqualTo(16 * 40));
        foreach (var client in clients)
        {
            client.Dispose();
        }
    }
}
