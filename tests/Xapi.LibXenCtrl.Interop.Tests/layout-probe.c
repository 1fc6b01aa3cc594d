/* Prints, one "name value" per line, the sizes, offsets and constants of libxl 4.17 that
 * src/Xapi.LibXenCtrl.Interop relies on; LayoutTests compiles this against libxen-dev's headers
 * and compares every line with the managed side's table (LibxlLayout.Facts). */
#include <stddef.h>
#include <stdio.h>
#include <libxl.h>
#include <xenctrl.h>
#include <xenstore.h>

#define SIZE(t) printf("sizeof(%s) %zu\n", #t, sizeof(t))
#define OFFSET(t, f) printf("offsetof(%s.%s) %zu\n", #t, #f, offsetof(t, f))
#define FIELDSIZE(t, f) printf("sizeof(%s.%s) %zu\n", #t, #f, sizeof(((t *)0)->f))
#define CONSTANT(c) printf("%s %ld\n", #c, (long)(c))

int main(void)
{
    SIZE(libxl_domain_config);

    SIZE(libxl_childproc_hooks);
    OFFSET(libxl_childproc_hooks, chldowner);
    FIELDSIZE(libxl_childproc_hooks, chldowner);
    OFFSET(libxl_childproc_hooks, fork_replacement);
    OFFSET(libxl_childproc_hooks, reaped_callback);
    CONSTANT(libxl_sigchld_owner_mainloop);

    SIZE(libxl_physinfo);
    OFFSET(libxl_physinfo, threads_per_core);
    FIELDSIZE(libxl_physinfo, threads_per_core);
    OFFSET(libxl_physinfo, cores_per_socket);
    FIELDSIZE(libxl_physinfo, cores_per_socket);
    OFFSET(libxl_physinfo, nr_cpus);
    OFFSET(libxl_physinfo, cpu_khz);
    FIELDSIZE(libxl_physinfo, cpu_khz);
    FIELDSIZE(libxl_physinfo, nr_cpus);
    OFFSET(libxl_physinfo, total_pages);
    FIELDSIZE(libxl_physinfo, total_pages);
    OFFSET(libxl_physinfo, free_pages);
    FIELDSIZE(libxl_physinfo, free_pages);

    SIZE(libxl_dominfo);
    OFFSET(libxl_dominfo, uuid);
    FIELDSIZE(libxl_dominfo, uuid);
    OFFSET(libxl_dominfo, domid);
    FIELDSIZE(libxl_dominfo, domid);
    OFFSET(libxl_dominfo, running);
    OFFSET(libxl_dominfo, blocked);
    OFFSET(libxl_dominfo, paused);
    OFFSET(libxl_dominfo, shutdown);
    OFFSET(libxl_dominfo, dying);
    FIELDSIZE(libxl_dominfo, paused);
    OFFSET(libxl_dominfo, shutdown_reason);
    FIELDSIZE(libxl_dominfo, shutdown_reason);
    OFFSET(libxl_dominfo, current_memkb);
    FIELDSIZE(libxl_dominfo, current_memkb);
    OFFSET(libxl_dominfo, max_memkb);
    FIELDSIZE(libxl_dominfo, max_memkb);
    OFFSET(libxl_dominfo, cpu_time);
    FIELDSIZE(libxl_dominfo, cpu_time);
    OFFSET(libxl_dominfo, vcpu_max_id);
    FIELDSIZE(libxl_dominfo, vcpu_max_id);
    OFFSET(libxl_dominfo, vcpu_online);
    FIELDSIZE(libxl_dominfo, vcpu_online);
    OFFSET(libxl_dominfo, domain_type);
    FIELDSIZE(libxl_dominfo, domain_type);

    SIZE(libxl_device_disk);
    SIZE(libxl_device_nic);

    SIZE(libxl_domain_restore_params);
    OFFSET(libxl_domain_restore_params, stream_version);
    FIELDSIZE(libxl_domain_restore_params, stream_version);

    SIZE(libxl_bitmap);
    OFFSET(libxl_bitmap, size);
    FIELDSIZE(libxl_bitmap, size);
    OFFSET(libxl_bitmap, map);

    CONSTANT(LIBXL_VERSION);
    CONSTANT(XBT_NULL);
    CONSTANT(XTL_DETAIL);
    CONSTANT(XTL_WARN);
    CONSTANT(LIBXL_DOMAIN_TYPE_HVM);
    CONSTANT(LIBXL_DOMAIN_TYPE_PV);
    CONSTANT(LIBXL_DOMAIN_TYPE_PVH);
    CONSTANT(LIBXL_SHUTDOWN_REASON_POWEROFF);
    CONSTANT(LIBXL_SHUTDOWN_REASON_REBOOT);
    CONSTANT(LIBXL_SHUTDOWN_REASON_SUSPEND);
    CONSTANT(LIBXL_SHUTDOWN_REASON_CRASH);
    CONSTANT(LIBXL_SHUTDOWN_REASON_WATCHDOG);
    CONSTANT(LIBXL_SHUTDOWN_REASON_SOFT_RESET);
    CONSTANT(ERROR_NONSPECIFIC);
    CONSTANT(ERROR_VERSION);
    CONSTANT(ERROR_FAIL);
    CONSTANT(ERROR_NI);
    CONSTANT(ERROR_NOMEM);
    CONSTANT(ERROR_INVAL);
    CONSTANT(ERROR_BADFAIL);
    CONSTANT(ERROR_GUEST_TIMEDOUT);
    CONSTANT(ERROR_TIMEDOUT);
    CONSTANT(ERROR_NOPARAVIRT);
    CONSTANT(ERROR_NOT_READY);
    CONSTANT(ERROR_OSEVENT_REG_FAIL);
    CONSTANT(ERROR_BUFFERFULL);
    CONSTANT(ERROR_UNKNOWN_CHILD);
    CONSTANT(ERROR_LOCK_FAIL);
    CONSTANT(ERROR_JSON_CONFIG_EMPTY);
    CONSTANT(ERROR_DEVICE_EXISTS);
    CONSTANT(ERROR_CHECKPOINT_DEVOPS_DOES_NOT_MATCH);
    CONSTANT(ERROR_CHECKPOINT_DEVICE_NOT_SUPPORTED);
    CONSTANT(ERROR_VNUMA_CONFIG_INVALID);
    CONSTANT(ERROR_DOMAIN_NOTFOUND);
    CONSTANT(ERROR_ABORTED);
    CONSTANT(ERROR_NOTFOUND);
    CONSTANT(ERROR_DOMAIN_DESTROYED);
    CONSTANT(ERROR_FEATURE_REMOVED);
    CONSTANT(ERROR_PROTOCOL_ERROR_QMP);
    CONSTANT(ERROR_UNKNOWN_QMP_ERROR);
    CONSTANT(ERROR_QMP_GENERIC_ERROR);
    CONSTANT(ERROR_QMP_COMMAND_NOT_FOUND);
    CONSTANT(ERROR_QMP_DEVICE_NOT_ACTIVE);
    CONSTANT(ERROR_QMP_DEVICE_NOT_FOUND);
    CONSTANT(ERROR_QEMU_API);
    return 0;
}
