using Xapi.Model;
using Xapi.Server.Dispatch;
using Xapi.Server.Operations;

namespace Xapi.Server.Api;

/// <summary>
/// <c>VM.set_is_a_template</c> as real hosts override the implicit setter (xapi_vm_helpers.ml,
/// message_forwarding.ml): making a template runs as <c>make_into_template</c> (a halted VM), and a
/// template keeps no runtime records; turning one back into a VM is its install time.
/// </summary>
public sealed partial class VMApi : IImplicitSetter
{
    MessageMeta IImplicitSetter.Message => ApiSchema.MessagesByWireName[SetIsATemplateMessage];

    // The implicit setter this class serves in place of the plain write.
    private static readonly string SetIsATemplateMessage = $"{VMRef.Class.Name}.set_{VMRef.Class.Fields[VMFields.IsATemplate].Name}";

    async ValueTask IImplicitSetter.SetAsync(CallContext context, string reference, object? value)
    {
        var self = new VMRef(reference);
        if (value is not true)
        {
            context.Write(tx =>
            {
                var now = time.GetUtcNow().UtcDateTime;
                var vm = tx.Get(self);
                var metrics = vm.Metrics;
                if (metrics.IsNull || !tx.Exists(metrics))
                {
                    // Real hosts leave a former template without metrics; every VM here has them, as VM.create makes them.
                    metrics = tx.CreateVMMetrics(m =>
                    {
                        m.Uuid = Guid.NewGuid().ToString("D");
                        m.VCPUsUtilisation = ValueMap.Empty.With(0L, 0.0);
                    });
                    tx.Update(self, v => v.Metrics = metrics);
                }
                tx.Update(metrics, m => m.InstallTime = now);
                tx.Update(self, v => v.IsATemplate = false);
                RefreshAllowedOperations(tx, self);
            });
            await context.SettledAsync();
            return;
        }

        using var operation = await operations.BeginAsync(VMRef.Class, reference, VmOperations.MakeIntoTemplate.ToWire(), context.OperationRef, context.Cancellation);
        context.Write(tx =>
        {
            var vm = tx.Get(self);
            // A template must not be restarted by HA, nor keep devices and groups only a VM has.
            tx.Update(self, v =>
            {
                v.HaAlwaysRun = false;
                v.Groups = [];
                v.Metrics = VMMetricsRef.Null;
                v.IsATemplate = true;
            });
            foreach (var vusb in vm.VUSBs.Where(tx.Exists))
            {
                tx.Delete(vusb);
            }
            DeleteIfExists(tx, vm.Metrics);
        });
        await context.SettledAsync();
    }
}
