"""Points Debian's python3-os-xenapi at a pool member: its first login meets HOST_IS_SLAVE and
logs in at the master the error names (os_xenapi.client.session, what OpenStack nova uses).

Run with Debian's own /usr/bin/python3:
  python3 xenapi_py_host_is_slave.py MEMBER_URL PASSWORD MASTER_ADDRESS HOSTS
"""
import sys
import urllib.parse

from eventlet import queue
from os_xenapi.client import session as os_session


def main(member_url, password, master_address, hosts):
    # XenAPISession's constructor goes on to call nova's dom0 plugins, which this daemon does not
    # ship; its first login, which is where it follows HOST_IS_SLAVE, is run as it is.
    xenapi_session = object.__new__(os_session.XenAPISession)
    xenapi_session.timeout = 10
    xenapi_session.originator = "xapi-dotnet-tests"
    xenapi_session._sessions = queue.Queue()
    xenapi_session.is_slave = False
    master_url = xenapi_session._create_first_session(member_url, "root", password)
    session = xenapi_session._sessions.get()
    try:
        assert xenapi_session.is_slave, "the member did not answer HOST_IS_SLAVE"
        assert urllib.parse.urlparse(master_url).hostname == master_address, master_url
        all_hosts = session.xenapi.host.get_all()
        pool = session.xenapi.pool.get_all()[0]
        master = session.xenapi.pool.get_master(pool)
        print("followed %s to %s: hosts=%d master address=%s" % (
            member_url, master_url, len(all_hosts), session.xenapi.host.get_address(master)))
        assert len(all_hosts) == int(hosts), all_hosts
        assert session.xenapi.host.get_address(master) == master_address
    finally:
        session.xenapi.session.logout()
    print("OK")


if __name__ == "__main__":
    main(*sys.argv[1:])
