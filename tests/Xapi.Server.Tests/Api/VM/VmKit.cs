using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests.Api.VM;

/// <summary>What VM tests do over the wire: make a small VM with a disk and a network, and wait for a VM to reach a state.</summary>
public static class VmKit
{
    public const long MiB = 1L << 20;

    /// <summary>A halted PV VM of 256 MiB and one vCPU, with a 4 MiB disk (on the local SR, or <paramref name="sr"/>) and a VIF unless told otherwise.</summary>
    public static async Task<string> CreateVmAsync(this XenApiClient client, string name, Action<Dictionary<string, object?>>? edit = null, bool withDevices = true,
        string? sr = null)
    {
        var record = ApiSchema.Class("VM").MinimalRecord();
        record["name_label"] = name;
        record["memory_static_min"] = (128 * MiB).ToString();
        record["memory_dynamic_min"] = (256 * MiB).ToString();
        record["memory_dynamic_max"] = (256 * MiB).ToString();
        record["memory_static_max"] = (256 * MiB).ToString();
        record["VCPUs_max"] = "1";
        record["VCPUs_at_startup"] = "1";
        record["actions_after_shutdown"] = "destroy";
        record["actions_after_reboot"] = "restart";
        record["actions_after_crash"] = "restart";
        edit?.Invoke(record);
        var vm = (string)(await client.InvokeAsync("VM.create", record))!;
        if (withDevices)
        {
            sr ??= (string)((IReadOnlyList<object?>)(await client.InvokeAsync("SR.get_by_name_label", "Local storage"))!)[0]!;
            var disk = ApiSchema.Class("VDI").MinimalRecord();
            disk["name_label"] = name + " disk";
            disk["SR"] = sr;
            disk["virtual_size"] = (4 * MiB).ToString();
            var vdi = (string)(await client.InvokeAsync("VDI.create", disk))!;
            var vbd = ApiSchema.Class("VBD").MinimalRecord();
            vbd["VM"] = vm;
            vbd["VDI"] = vdi;
            vbd["userdevice"] = "0";
            vbd["type"] = "Disk";
            vbd["mode"] = "RW";
            vbd["bootable"] = true;
            await client.InvokeAsync("VBD.create", vbd);
            var vif = ApiSchema.Class("VIF").MinimalRecord();
            vif["VM"] = vm;
            vif["network"] = ((IReadOnlyList<object?>)(await client.InvokeAsync("network.get_all"))!)[0];
            vif["device"] = "0";
            vif["MAC"] = "";
            vif["MTU"] = "1500";
            await client.InvokeAsync("VIF.create", vif);
        }
        return vm;
    }

    /// <summary>Follows the VM through event.from until <paramref name="until"/> holds for its record; returns that record.</summary>
    public static async Task<IReadOnlyDictionary<string, object?>> UntilVmAsync(this XenApiClient client, string vm,
        Func<IReadOnlyDictionary<string, object?>, bool> until, TimeSpan? timeout = null)
    {
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(20));
        var token = "";
        var record = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_record", vm))!;
        while (!until(record))
        {
            deadline.Token.ThrowIfCancellationRequested();
            var batch = await client.FromAsync([$"VM/{vm}"], token, 5);
            token = batch.Token;
            record = (IReadOnlyDictionary<string, object?>)(await client.InvokeAsync("VM.get_record", vm))!;
        }
        return record;
    }
}

/// <summary>
/// One daemon for a fixture's tests, on a simulated 4 GiB host whose guests boot in 100 ms and act
/// on shutdown requests in 20 ms unless the fixture says otherwise.
/// </summary>
public abstract class SimulatedHostFixture(Action<ServerOptions>? configure = null)
{
    protected TestDaemon Daemon { get; private set; } = null!;

    protected XenApiClient Client { get; private set; } = null!;

    protected Xapi.Xenops.Simulator.SimulatorBackend Simulator => (Xapi.Xenops.Simulator.SimulatorBackend)Daemon.Service<Xapi.Xenops.IHypervisor>();

    [OneTimeSetUp]
    public async Task StartDaemonAsync()
    {
        Daemon = await TestDaemon.StartAsync(o =>
        {
            o.SimulatedGuestAgentDelay = TimeSpan.FromMilliseconds(100);
            o.SimulatedShutdownDelay = TimeSpan.FromMilliseconds(20);
            o.SimulatedHostMemory = 4L << 30;
            configure?.Invoke(o);
        });
        Client = await Daemon.LoginAsync();
    }

    [OneTimeTearDown]
    public async Task StopDaemonAsync()
    {
        Client.Dispose();
        await Daemon.DisposeAsync();
    }

    protected async Task<IReadOnlyDictionary<string, object?>> RecordAsync(string cls, string reference) =>
        (IReadOnlyDictionary<string, object?>)(await Client.InvokeAsync($"{cls}.get_record", reference))!;

    protected async Task<string> HostAsync() => (string)((IReadOnlyList<object?>)(await Client.InvokeAsync("host.get_all"))!)[0]!;
}
