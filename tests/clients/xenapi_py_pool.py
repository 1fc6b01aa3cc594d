"""A three-host pool driven by Debian's XenAPI.py (python3-os-xenapi): two fresh hosts join the
first, VMs start on each member and spread over the pool, a VM with its disk on a shared SR
migrates live from member to member and to the master, a member is ejected and joins again, and
a new master is designated. After each step every host's view of the pool is compared with
the master's, read through an administrator's local login on each member.

Run with Debian's own /usr/bin/python3:
  python3 xenapi_py_pool.py PASSWORD MASTER_URL MEMBER_URL MEMBER_URL
"""
import sys
import tempfile
import time
import urllib.parse

from os_xenapi.client import XenAPI

CLASSES = ["pool", "host", "host_metrics", "SR", "PBD", "VDI", "VM", "VBD", "VIF", "network", "PIF"]


def login(url, password):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "2.21", "xapi-dotnet-tests")
    return session


def local(url, password):
    session = XenAPI.Session(url)
    session.slave_local_login_with_password("root", password)
    return session


def unordered(value):
    # Sets (a host's resident VMs, a network's PIFs) come in each host's order of arrival.
    if isinstance(value, list):
        return sorted(unordered(v) for v in value)
    if isinstance(value, dict):
        return {k: unordered(v) for k, v in value.items()}
    return value


def view(session):
    return {cls: unordered(getattr(session.xenapi, cls).get_all_records()) for cls in CLASSES}


def differences(want, got):
    for cls in CLASSES:
        for ref in set(want[cls]) | set(got[cls]):
            a, b = want[cls].get(ref), got[cls].get(ref)
            if a != b:
                fields = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
                yield "%s %s %s" % (cls, ref, fields[:5])


def consistent(step, master, members):
    """Waits on each member's events until its view is the master's (20 s at most)."""
    for url, member in members:
        token = ""
        deadline = time.monotonic() + 20
        while True:
            want, got = view(master), view(member)
            if want == got:
                break
            if time.monotonic() > deadline:
                raise AssertionError("%s: %s's view differs from the master's: %s" % (step, url, list(differences(want, got))[:5]))
            token = getattr(member.xenapi.event, "from")(["*"], token, 1.0)["token"]
    print("%s: %d hosts agree (%d VMs)" % (step, len(members) + 1, len(view(master)["VM"])))


def address(url):
    return urllib.parse.urlparse(url).hostname


def main(password, *urls):
    master_url, member_urls = urls[0], list(urls[1:])
    for url in member_urls:
        joiner = login(url, password)
        joiner.xenapi.pool.join(address(master_url), "root", password)
    master = login(master_url, password)
    members = [(url, local(url, password)) for url in member_urls]
    consistent("join", master, members)
    api = master.xenapi
    host_of = {api.host.get_address(h): h for h in api.host.get_all()}
    assert len(host_of) == 3, host_of

    template = api.VM.get_by_name_label("Other install media")[0]
    vms = []
    for i in range(5):
        vm = api.VM.clone(template, "pool vm %d" % i)
        api.VM.set_is_a_template(vm, False)
        vms.append(vm)
    for vm, url in zip(vms, member_urls):
        api.VM.start_on(vm, host_of[address(url)], False, False)
        assert api.VM.get_resident_on(vm) == host_of[address(url)]
    consistent("start_on each member", master, members)
    for vm in vms[2:]:
        api.VM.start(vm, False, False)
    residents = [api.VM.get_resident_on(vm) for vm in vms]
    counts = sorted(residents.count(h) for h in host_of.values())
    print("5 VMs over 3 hosts: %s" % counts)
    assert counts[-1] - counts[0] <= 1, counts
    consistent("start spread by free memory", master, members)
    for vm in vms:
        api.VM.hard_shutdown(vm)

    # A directory every host of this machine reaches stands in for NFS.
    sr = api.SR.create(host_of[address(master_url)], {"location": tempfile.mkdtemp(prefix="xapi-py-shared-")}, "0",
                       "pool storage", "", "ext", "user", True, {})
    mover = vms[0]
    vdi = api.VDI.create({"name_label": "moving disk", "name_description": "", "SR": sr, "virtual_size": str(4 << 20),
                          "type": "user", "sharable": False, "read_only": False, "other_config": {},
                          "xenstore_data": {}, "sm_config": {}, "tags": []})
    api.VBD.create({"VM": mover, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                    "unpluggable": True, "empty": False, "other_config": {}, "qos_algorithm_type": "",
                    "qos_algorithm_params": {}})
    api.VM.start_on(mover, host_of[address(member_urls[0])], False, False)
    # An HVM guest moves live only with its PV drivers up (VM_LACKS_FEATURE before), as on real hosts.
    token, deadline = "", time.monotonic() + 30
    while api.VM.get_guest_metrics(mover) == "OpaqueRef:NULL":
        assert time.monotonic() < deadline, "the guest's agent did not report"
        token = getattr(api.event, "from")(["VM"], token, 1.0)["token"]
    api.VM.pool_migrate(mover, host_of[address(member_urls[1])], {"live": "true"})
    assert api.VM.get_resident_on(mover) == host_of[address(member_urls[1])]
    assert api.VM.get_power_state(mover) == "Running"
    consistent("pool_migrate member to member", master, members)
    api.VM.pool_migrate(mover, host_of[address(master_url)], {"live": "true"})
    assert api.VM.get_resident_on(mover) == host_of[address(master_url)]
    consistent("pool_migrate to the master", master, members)
    api.VM.hard_shutdown(mover)

    ejected_url = member_urls[1]
    api.pool.eject(host_of[address(ejected_url)])
    consistent("eject", master, members[:1])
    alone = login(ejected_url, password)
    assert len(alone.xenapi.host.get_all()) == 1, "the ejected host is a pool of its own"
    alone.xenapi.pool.join(address(master_url), "root", password)
    members[1] = (ejected_url, local(ejected_url, password))
    consistent("rejoin", master, members)

    heir_url = member_urls[0]
    heir = host_of[address(heir_url)]
    api.pool.designate_new_master(heir)
    new_master = login(heir_url, password)
    assert new_master.xenapi.pool.get_master(new_master.xenapi.pool.get_all()[0]) == heir
    try:
        login(master_url, password)
        raise AssertionError("the old master still lets clients in")
    except XenAPI.Failure as failure:
        assert failure.details == ["HOST_IS_SLAVE", address(heir_url)], failure.details
    consistent("designate new master", new_master, [(master_url, local(master_url, password)), members[1]])
    print("OK")


if __name__ == "__main__":
    main(*sys.argv[1:])
