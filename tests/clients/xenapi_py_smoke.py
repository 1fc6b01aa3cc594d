"""Drives the daemon with XenAPI.py from Debian's python3-os-xenapi (what OpenStack nova uses).

Run with Debian's own /usr/bin/python3: python3 xenapi_py_smoke.py URL PASSWORD
"""
import sys
import xmlrpc.client

from os_xenapi.client import XenAPI


def main(url, password):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "2.21", "xapi-dotnet-tests")
    try:
        api = session.xenapi
        pool = api.pool.get_all()[0]
        master = api.pool.get_master(pool)
        major = api.host.get_API_version_major(master)
        minor = api.host.get_API_version_minor(master)
        templates = api.VM.get_all_records_where('field "is_a_template"="true"')
        print("pool=%s master=%s api=%s.%s templates=%d" % (pool, master, major, minor, len(templates)))
        assert pool.startswith("OpaqueRef:"), pool
        assert master in api.host.get_all(), master
        assert str(major) == "2", major
        assert templates, "no templates"
        assert all(r["is_a_template"] is True for r in templates.values()), "filter let a non-template through"
        try:
            api.VM.get_record("OpaqueRef:missing")
            raise AssertionError("get_record of a missing VM succeeded")
        except XenAPI.Failure as failure:
            assert failure.details[:2] == ["HANDLE_INVALID", "VM"], failure.details
    finally:
        session.xenapi.session.logout()
    # system.listMethods is answered bare, as real servers do, so plain ServerProxy gets a list.
    methods = xmlrpc.client.ServerProxy(url).system.listMethods()
    assert isinstance(methods, list) and all(isinstance(m, str) for m in methods), type(methods)
    assert "VM.start" in methods and not any(m.startswith("Async.") for m in methods), methods[:5]
    through_session = XenAPI.Session(url).system.listMethods()
    assert through_session == methods, "XenAPI.Session's own ServerProxy sees the same list"
    print("methods=%d" % len(methods))
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
