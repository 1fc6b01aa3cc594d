"""Runs a VM through its life as OpenStack nova's XenAPI driver does, with XenAPI.py from
Debian's python3-os-xenapi: create from nova's full record, disk, VIF, VM.start_on the host,
VM.clean_shutdown, VM.hard_reboot, VM.snapshot then VM.revert, VM.destroy
(nova/virt/xenapi/vmops.py spawn, power_off, reboot, snapshot, and vm_utils.py).

Run with Debian's own /usr/bin/python3: python3 xenapi_py_nova_lifecycle.py URL PASSWORD
"""
import sys
import time

from os_xenapi.client import XenAPI

from xenapi_py_nova_records import MIB, create_vbd, create_vdi, create_vif, create_vm, expect_failure


def wait_for(api, vm, what, predicate, timeout=20.0):
    """Follows the VM through event.from until predicate(record) holds, as nova's wait loops do."""
    deadline = time.monotonic() + timeout
    event_from = getattr(api.event, "from")
    token = ""
    while True:
        record = api.VM.get_record(vm)
        if predicate(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError("%s not seen within %ss: %s" % (what, timeout, record["power_state"]))
        token = event_from(["VM/%s" % vm], token, 5.0)["token"]


def main(url, password):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "2.21", "nova-style-tests")
    api = session.xenapi
    try:
        host = api.host.get_all()[0]
        sr = api.pool.get_default_SR(api.pool.get_all()[0])
        network = api.network.get_all()[0]

        vm = create_vm(api, "instance-00000002", 256, 1)
        root = create_vdi(api, sr, "instance-00000002 root", 16 * MIB)
        create_vbd(api, vm, root, 0, bootable=True)
        create_vbd(api, vm, None, "autodetect", vbd_type="CD", read_only=True, empty=True, unpluggable=False)
        create_vif(api, vm, network, 0, "")

        # spawn: start_on the chosen host, paused=False, force=False.
        api.VM.start_on(vm, host, False, False)
        rec = api.VM.get_record(vm)
        assert rec["power_state"] == "Running", rec["power_state"]
        assert rec["resident_on"] == host, rec["resident_on"]
        first_domid = int(rec["domid"])
        assert first_domid > 0, rec["domid"]
        expect_failure(["VM_BAD_POWER_STATE", vm, "halted", "running"], api.VM.start_on, vm, host, False, False)

        # An HVM guest shuts down cleanly once its agent says it can.
        rec = wait_for(api, vm, "guest metrics", lambda r: r["guest_metrics"] != "OpaqueRef:NULL")
        metrics = api.VM_guest_metrics.get_record(rec["guest_metrics"])
        assert metrics["PV_drivers_detected"] is True, metrics
        api.VM.clean_shutdown(vm)
        rec = api.VM.get_record(vm)
        assert rec["power_state"] == "Halted" and rec["domid"] == "-1", (rec["power_state"], rec["domid"])

        # reboot (hard): a new domain, still running.
        api.VM.start(vm, False, False)
        before = int(api.VM.get_domid(vm))
        api.VM.hard_reboot(vm)
        rec = api.VM.get_record(vm)
        assert rec["power_state"] == "Running", rec["power_state"]
        assert int(rec["domid"]) != before, (rec["domid"], before)

        # snapshot of the running instance, then back to it once halted.
        snapshot = api.VM.snapshot(vm, "instance-00000002 snapshot")
        snap = api.VM.get_record(snapshot)
        assert snap["is_a_snapshot"] is True and snap["snapshot_of"] == vm, (snap["is_a_snapshot"], snap["snapshot_of"])
        assert snapshot in api.VM.get_snapshots(vm)
        api.VM.hard_shutdown(vm)
        api.VM.revert(snapshot)
        rec = api.VM.get_record(vm)
        assert rec["power_state"] == "Halted", rec["power_state"]
        assert len(rec["VBDs"]) == 2, rec["VBDs"]

        # destroy: halted VM and its snapshot go; nova destroys the disks itself.
        api.VM.destroy(snapshot)
        vdis = [api.VBD.get_VDI(v) for v in api.VM.get_VBDs(vm) if not api.VBD.get_empty(v)]
        api.VM.destroy(vm)
        assert vm not in api.VM.get_all()
        for vdi in vdis:
            api.VDI.destroy(vdi)
        print("domids %d -> %d" % (first_domid, before))
    finally:
        session.xenapi.session.logout()
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
