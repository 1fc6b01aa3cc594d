"""Creates and destroys a VM's records as OpenStack nova's XenAPI driver does, with XenAPI.py
from Debian's python3-os-xenapi (nova/virt/xenapi/vm_utils.py create_vm, create_vdi,
create_vbd, and vif.py).

Run with Debian's own /usr/bin/python3: python3 xenapi_py_nova_records.py URL PASSWORD
"""
import re
import sys

from os_xenapi.client import XenAPI

MIB = 1024 * 1024
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def create_vm(api, name, memory_mb, vcpus):
    mem = str(memory_mb * MIB)
    # The record as nova's create_vm sends it: numbers as strings, no affinity as "".
    rec = {
        "actions_after_crash": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_shutdown": "destroy",
        "affinity": "",
        "blocked_operations": {},
        "ha_always_run": False,
        "ha_restart_priority": "",
        "HVM_boot_params": {"order": "dc"},
        "HVM_boot_policy": "BIOS order",
        "is_a_template": False,
        "memory_dynamic_min": mem,
        "memory_dynamic_max": mem,
        "memory_static_min": "0",
        "memory_static_max": mem,
        "memory_target": mem,
        "name_description": "",
        "name_label": name,
        "other_config": {"nova_uuid": "0b1b6a7e-6c1e-4b43-9d4e-5d3a0f5f9d10"},
        "PCI_bus": "",
        "platform": {"acpi": "true", "apic": "true", "pae": "true", "viridian": "true", "timeoffset": "0", "nx": "true"},
        "PV_args": "",
        "PV_bootloader": "",
        "PV_bootloader_args": "",
        "PV_kernel": "",
        "PV_legacy_args": "",
        "PV_ramdisk": "",
        "recommendations": "",
        "tags": [],
        "user_version": "0",
        "VCPUs_at_startup": str(vcpus),
        "VCPUs_max": str(vcpus),
        "VCPUs_params": {},
        "xenstore_data": {"vm-data/allowvssprovider": "false"},
    }
    return api.VM.create(rec)


def create_vdi(api, sr, name, size):
    return api.VDI.create({
        "name_label": name,
        "name_description": "",
        "SR": sr,
        "virtual_size": str(size),
        "type": "User",
        "sharable": False,
        "read_only": False,
        "xenstore_data": {},
        "other_config": {"nova_disk_type": "root", "nova_instance_uuid": "0b1b6a7e"},
        "sm_config": {},
        "tags": [],
    })


def create_vbd(api, vm, vdi, userdevice, vbd_type="disk", read_only=False, bootable=False, empty=False, unpluggable=True):
    return api.VBD.create({
        "VM": vm,
        "VDI": vdi if vdi is not None else "OpaqueRef:NULL",
        "userdevice": str(userdevice),
        "bootable": bootable,
        "mode": "RO" if read_only else "RW",
        "type": vbd_type,
        "unpluggable": unpluggable,
        "empty": empty,
        "other_config": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
        "qos_supported_algorithms": [],
    })


def create_vif(api, vm, network, device, mac):
    return api.VIF.create({
        "device": str(device),
        "network": network,
        "VM": vm,
        "MAC": mac,
        "MTU": "1500",
        "other_config": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    })


def expect_failure(details, call, *args):
    try:
        call(*args)
    except XenAPI.Failure as failure:
        assert failure.details == details, failure.details
        return
    raise AssertionError("expected %s" % details)


def main(url, password):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "2.21", "nova-style-tests")
    api = session.xenapi
    try:
        pool = api.pool.get_all()[0]
        sr = api.pool.get_default_SR(pool)
        network = api.network.get_all()[0]

        vm = create_vm(api, "instance-00000001", 512, 2)
        rec = api.VM.get_record(vm)
        assert rec["power_state"] == "Halted", rec["power_state"]
        assert rec["domid"] == "-1", rec["domid"]
        assert rec["affinity"] == "OpaqueRef:NULL", rec["affinity"]
        assert rec["memory_static_max"] == str(512 * MIB), rec["memory_static_max"]
        assert rec["VCPUs_max"] == "2", rec["VCPUs_max"]
        assert rec["domain_type"] == "hvm", rec["domain_type"]
        assert rec["other_config"]["nova_uuid"].startswith("0b1b6a7e"), rec["other_config"]
        assert "mac_seed" in rec["other_config"], rec["other_config"]
        assert api.VM_metrics.get_memory_actual(rec["metrics"]) == "0"

        root = create_vdi(api, sr, "instance-00000001 root", 16 * MIB)
        devices = api.VM.get_allowed_VBD_devices(vm)
        assert devices[:3] == ["0", "1", "2"], devices[:3]
        disk = create_vbd(api, vm, root, 0, bootable=True)
        cd = create_vbd(api, vm, None, "autodetect", vbd_type="CD", read_only=True, empty=True, unpluggable=False)
        assert api.VBD.get_userdevice(cd) == "1", api.VBD.get_userdevice(cd)
        expect_failure(["DEVICE_ALREADY_EXISTS", "0"], create_vbd, api, vm, root, 0)

        vif = create_vif(api, vm, network, 0, "")
        mac = api.VIF.get_MAC(vif)
        assert MAC.match(mac) and int(mac[:2], 16) & 3 == 2, mac
        assert api.VIF.get_MAC_autogenerated(vif) is True
        given = create_vif(api, vm, network, 1, "fa:16:3e:00:00:01")
        assert api.VIF.get_MAC(given) == "fa:16:3e:00:00:01"
        expect_failure(["DEVICE_ALREADY_EXISTS", "1"], create_vif, api, vm, network, 1, "")
        expect_failure(["MAC_INVALID", "fa:16:3e"], create_vif, api, vm, network, 2, "fa:16:3e")
        assert api.VM.get_allowed_VIF_devices(vm)[:2] == ["2", "3"]
        print("vm=%s disk=%s cd=%s vif=%s mac=%s" % (vm, disk, cd, vif, mac))

        api.VM.destroy(vm)
        assert vm not in api.VM.get_all()
        for vbd in (disk, cd):
            expect_failure(["HANDLE_INVALID", "VBD", vbd], api.VBD.get_record, vbd)
        for each in (vif, given):
            expect_failure(["HANDLE_INVALID", "VIF", each], api.VIF.get_record, each)
        expect_failure(["HANDLE_INVALID", "VM_metrics", rec["metrics"]], api.VM_metrics.get_record, rec["metrics"])
        assert root in api.VDI.get_all(), "the disk outlives its VM"
        api.VDI.destroy(root)
    finally:
        session.xenapi.session.logout()
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
