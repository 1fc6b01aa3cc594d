using System.Globalization;
using Xapi.Database;
using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// A VM's memory and vCPUs (xapi_vm.ml, xapi_vm_memory_constraints.ml, message_forwarding.ml):
/// the limits of a halted VM, the dynamic range and vCPU count of a running one through the
/// hypervisor seam, the overhead, and the few statistics the backend reports.
/// </summary>
public sealed partial class VMApi
{
    private const string PinningReasonControlDomain = "control domain";
    private const string PinningReasonNestedVirt = "nested virt";
    private const string LiveVcpuRule = "VCPU values must satisfy: 0 < VCPUs \u2264 VCPUs_max";
    private const string UnspecifiedDomainType = "unspecified domain type";
    private const long BytesPerKiB = 1024;

    [RunsAs<VmOperations>(VmOperations.ChangingMemoryLimits)]
    public ValueTask SetMemoryLimits(CallContext context, VMRef self, long staticMin, long staticMax, long dynamicMin, long dynamicMax)
    {
        WriteMemoryLimits(context, self, staticMin, staticMax, dynamicMin, dynamicMax);
        return ValueTask.CompletedTask;
    }

    /// <summary>Pins the VM at <paramref name="value"/>: static_max and the dynamic range, static_min unchanged.</summary>
    [RunsAs<VmOperations>(VmOperations.ChangingMemoryLimits)]
    public ValueTask SetMemory(CallContext context, VMRef self, long value)
    {
        WriteMemoryLimits(context, self, context.Snapshot.Get(self).MemoryStaticMin, value, value, value);
        return ValueTask.CompletedTask;
    }

    private static void WriteMemoryLimits(CallContext context, VMRef self, long staticMin, long staticMax, long dynamicMin, long dynamicMax) =>
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            AssertMemoryConstraints(tx, vm, staticMin, dynamicMin, dynamicMax, staticMax);
            tx.Update(self, v =>
            {
                v.MemoryStaticMin = staticMin;
                v.MemoryStaticMax = staticMax;
                v.MemoryDynamicMin = dynamicMin;
                v.MemoryDynamicMax = dynamicMax;
                v.MemoryTarget = dynamicMin;
            });
            UpdateMemoryOverhead(tx, self);
            RequireRebootIfRunningControlDomain(tx, vm);
        });

    [RunsAs<VmOperations>(VmOperations.ChangingStaticRange)]
    public ValueTask SetMemoryStaticRange(CallContext context, VMRef self, long min, long max)
    {
        WriteStaticRange(context, self, min, max);
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingStaticRange)]
    public ValueTask SetMemoryStaticMin(CallContext context, VMRef self, long value)
    {
        WriteStaticRange(context, self, value, context.Snapshot.Get(self).MemoryStaticMax);
        return ValueTask.CompletedTask;
    }

    [RunsAs<VmOperations>(VmOperations.ChangingStaticRange)]
    public ValueTask SetMemoryStaticMax(CallContext context, VMRef self, long value)
    {
        WriteStaticRange(context, self, context.Snapshot.Get(self).MemoryStaticMin, value);
        return ValueTask.CompletedTask;
    }

    private static void WriteStaticRange(CallContext context, VMRef self, long min, long max) =>
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            AssertMemoryConstraints(tx, vm, min, vm.MemoryDynamicMin, vm.MemoryDynamicMax, max);
            tx.Update(self, v =>
            {
                v.MemoryStaticMin = min;
                v.MemoryStaticMax = max;
            });
            UpdateMemoryOverhead(tx, self);
            RequireRebootIfRunningControlDomain(tx, vm);
        });

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.ChangingDynamicRange)]
    public ValueTask SetMemoryDynamicRange(CallContext context, VMRef self, long min, long max) => DynamicRangeAsync(context, self, min, max);

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.ChangingDynamicRange)]
    public ValueTask SetMemoryDynamicMin(CallContext context, VMRef self, long value) =>
        DynamicRangeAsync(context, self, value, context.Snapshot.Get(self).MemoryDynamicMax);

    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.ChangingDynamicRange)]
    public ValueTask SetMemoryDynamicMax(CallContext context, VMRef self, long value) =>
        DynamicRangeAsync(context, self, context.Snapshot.Get(self).MemoryDynamicMin, value);

    /// <summary>
    /// A halted VM's range is only stored. A running VM's is first reserved against the host (in
    /// KiB, as real hosts report it here), then checked, stored with memory_target at the new
    /// minimum, handed to the backend, and the backend's balloon target folded back.
    /// </summary>
    private async ValueTask DynamicRangeAsync(CallContext context, VMRef self, long min, long max)
    {
        var record = context.Snapshot.Get(self);
        if (record.PowerState != VmPowerState.Running)
        {
            // The operation stage admitted Halted or Running only.
            context.Write(tx => WriteDynamicRange(tx, self, min, max));
            return;
        }
        var uuid = Guid.Parse(record.Uuid);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        var memory = await runtime.Hypervisor.GetHostMemoryAsync(hold.Token);
        var oldMin = record.MemoryDynamicMin;
        var oldMax = record.MemoryDynamicMax;
        var reserved = context.Write(tx =>
        {
            var current = tx.Get(self);
            var available = BootChecks.FreeBytes(tx, current.ResidentOn, memory);
            var change = current.MemoryDynamicMin - min;
            if (available + change < 0)
            {
                // Every other HOST_NOT_ENOUGH_FREE_MEMORY is in bytes; this one real hosts send in KiB.
                throw XenApiErrors.HostNotEnoughFreeMemory(((-change) / BytesPerKiB).ToString(CultureInfo.InvariantCulture),
                    (available / BytesPerKiB).ToString(CultureInfo.InvariantCulture));
            }
            if (change < 0)
            {
                // A growing minimum is claimed at once, so that concurrent starts see it.
                tx.Update(self, v =>
                {
                    v.MemoryDynamicMin = min;
                    v.MemoryDynamicMax = max;
                });
            }
            return change < 0;
        });
        void RestoreIfReserved()
        {
            if (reserved)
            {
                context.Write(tx => tx.Update(self, v =>
                {
                    v.MemoryDynamicMin = oldMin;
                    v.MemoryDynamicMax = oldMax;
                }));
            }
        }
        try
        {
            context.Write(tx => WriteDynamicRange(tx, self, min, max));
            await runtime.Hypervisor.SetMemoryDynamicRangeAsync(uuid, min, max, hold.Token);
        }
        catch (XenopsException e)
        {
            RestoreIfReserved();
            throw XenopsErrors.ToXenApi(e, self);
        }
        catch
        {
            RestoreIfReserved();
            throw;
        }
        finally
        {
            await runtime.SyncAsync(self, uuid, VmPowerState.Halted, CancellationToken.None);
        }
    }

    private static void WriteDynamicRange(Transaction tx, VMRef self, long min, long max)
    {
        var vm = tx.Get(self);
        AssertMemoryConstraints(tx, vm, vm.MemoryStaticMin, min, max, vm.MemoryStaticMax);
        tx.Update(self, v =>
        {
            // memory_target is the balloon's business now; real hosts set it to the minimum so that no check trips on it.
            v.MemoryTarget = min;
            v.MemoryDynamicMin = min;
            v.MemoryDynamicMax = max;
        });
    }

    /// <summary>Deprecated (use set_memory_dynamic_range): real hosts accept it on a running VM and do nothing.</summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.ChangingMemoryLive)]
    public ValueTask SetMemoryTargetLive(CallContext context, VMRef self, long target) => ValueTask.CompletedTask;

    /// <summary>
    /// Brings vCPUs online or offline in the running guest; the new count is also what the VM
    /// starts with next time. The backend refuses a count outside 1..VCPUs_max.
    /// </summary>
    [RunsOn(HostSelection.ResidentHost)]
    [RunsAs<VmOperations>(VmOperations.ChangingVCPUsLive)]
    public async ValueTask SetVCPUsNumberLive(CallContext context, VMRef self, long nvcpu)
    {
        var record = context.Snapshot.Get(self);
        var uuid = Guid.Parse(record.Uuid);
        await using var hold = await runtime.HoldAsync(uuid, context.Cancellation);
        try
        {
            if (nvcpu is < 1 or > int.MaxValue)
            {
                throw new InvalidDomainRequestException(uuid, "vCPU count out of range");
            }
            await runtime.Hypervisor.SetVcpusAsync(uuid, (int)nvcpu, hold.Token);
            context.Write(tx =>
            {
                tx.Update(self, v => v.VCPUsAtStartup = nvcpu);
                UpdateMemoryOverhead(tx, self);
            });
        }
        catch (InvalidDomainRequestException)
        {
            // Real hosts name VCPUs_max here, not the count asked for: the backend's error carries it.
            throw XenApiErrors.InvalidValue(LiveVcpuRule, Text(record.VCPUsMax));
        }
        catch (XenopsException e)
        {
            throw XenopsErrors.ToXenApi(e, self);
        }
        finally
        {
            await runtime.SyncAsync(self, uuid, VmPowerState.Halted, CancellationToken.None);
        }
    }

    public ValueTask<long> ComputeMemoryOverhead(CallContext context, VMRef vm)
    {
        var record = context.Snapshot.Get(vm);
        if (record.DomainType == Xapi.Model.DomainType.Unspecified)
        {
            throw XenApiErrors.InternalError(UnspecifiedDomainType);
        }
        return ValueTask.FromResult(VmMemoryOverhead.Bytes(record.MemoryStaticMax, record.VCPUsMax, record.HVMShadowMultiplier, record.DomainType));
    }

    /// <summary>The VM's record as it is now (real hosts no longer answer with last_booted_record).</summary>
    [RunsAs<VmOperations>(VmOperations.GetBootRecord)]
    public ValueTask<ValueMap> GetBootRecord(CallContext context, VMRef self)
    {
        var snapshot = context.Snapshot;
        var record = snapshot.ToRecord(snapshot.Get(VMRef.Class, self.Value));
        return ValueTask.FromResult(ValueMap.FromPairs(record));
    }

    // The statistics the backend reports, by their RRD names and descriptions (xcp-rrdd).
    private static readonly (string Name, string Description, string Units, Func<DomainStats, double> Read)[] DataSources =
    [
        ("memory", "Memory currently allocated to VM", "B", s => s.MemoryActual),
        ("memory_target", "Target of VM balloon driver", "B", s => s.MemoryTarget),
    ];

    /// <summary>The latest value of one of the backend's statistics of a running or paused VM.</summary>
    public async ValueTask<double> QueryDataSource(CallContext context, VMRef self, string dataSource)
    {
        var record = context.Snapshot.Get(self);
        AssertPowerState(record, VmPowerState.Running, VmPowerState.Paused);
        var source = DataSources.FirstOrDefault(d => d.Name == dataSource);
        if (source.Name is null)
        {
            throw XenApiErrors.InternalError($"Datasource_missing: {dataSource}");
        }
        return source.Read(await StatsAsync(self, record));
    }

    [RunsAs<VmOperations>(VmOperations.DataSourceOp)]
    public async ValueTask<IReadOnlyList<object?>> GetDataSources(CallContext context, VMRef self)
    {
        var record = context.Snapshot.Get(self);
        var stats = await StatsAsync(self, record);
        return DataSources.Select(d =>
        {
            var values = new object?[DataSourceRef.Class.Fields.Count];
            values[DataSourceFields.NameLabel] = d.Name;
            values[DataSourceFields.NameDescription] = d.Description;
            values[DataSourceFields.Enabled] = true;
            values[DataSourceFields.Standard] = true;
            values[DataSourceFields.Units] = d.Units;
            values[DataSourceFields.Min] = 0.0;
            // A VM's memory never exceeds static_max (and infinity has no XML-RPC spelling).
            values[DataSourceFields.Max] = (double)record.MemoryStaticMax;
            values[DataSourceFields.Value] = d.Read(stats);
            return (object?)new RecordValue(DataSourceRef.Class, values);
        }).ToList();
    }

    private async ValueTask<DomainStats> StatsAsync(VMRef self, VMRecord record)
    {
        try
        {
            return await runtime.Hypervisor.GetStatsAsync(Guid.Parse(record.Uuid));
        }
        catch (XenopsException e)
        {
            throw XenopsErrors.ToXenApi(e, self);
        }
    }

    /// <summary>
    /// Mirrors the memory constraint rules (vm_memory_constraints.ml): a control domain or a
    /// nested-virtualisation guest must be pinned at static_max; any other VM needs its bounds in order.
    /// </summary>
    private static void AssertMemoryConstraints(IRowReader db, VMRecord vm, long staticMin, long dynamicMin, long dynamicMax, long staticMax)
    {
        var pinningReason = vm.IsControlDomain ? PinningReasonControlDomain : NestedVirt(db, vm) ? PinningReasonNestedVirt : null;
        if (pinningReason is not null)
        {
            if (!(staticMin <= dynamicMin && dynamicMin == dynamicMax && dynamicMax == staticMax))
            {
                throw XenApiErrors.MemoryConstraintViolationMaxpin(pinningReason);
            }
            return;
        }
        if (!(staticMin <= dynamicMin && dynamicMin <= dynamicMax && dynamicMax <= staticMax))
        {
            throw XenApiErrors.MemoryConstraintViolationOrder();
        }
    }

    // VM_metrics holds what the domain was started with; without metrics the VM's platform decides (xapi_vm_lifecycle.ml nested_virt).
    private static bool NestedVirt(IRowReader db, VMRecord vm) =>
        db.TryGet(vm.Metrics, out var metrics) ? metrics.NestedVirt : VmAllowedOperations.IsTrue(vm.Platform, NestedVirtKey);

    private const string NestedVirtKey = "nested-virt";
}
