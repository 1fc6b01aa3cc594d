#!/usr/bin/env bash
# nfs-sandbox.sh <scratch> [--] <command> [args...]
# Runs <command> inside a private network namespace whose only interface is loopback, in which
# rpcbind and nfs-ganesha (FSAL VFS) export <scratch>/export as nfs://127.0.0.1/export (NFSv3 and
# NFSv4, TCP only). The namespace exists because rpcbind cannot be bound to loopback (its -h option
# crashes), so it would otherwise listen on every address of the host. Sets NFS_SANDBOX_URL and
# NFS_SANDBOX_DIR for the command, stops both servers by pid afterwards, and exits with the
# command's status (98: the server did not come up, see <scratch>/log).
# Needs root (unshare, mount) and: nfs-ganesha nfs-ganesha-vfs libnfs-utils (rpcbind and libnfs13
# come with them), iproute2, util-linux; qemu-utils and qemu-block-extra for nfs:// in qemu-img.
# Nothing outside the namespace is reachable from the command: build before, not inside.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 <scratch> [--] <command> [args...]" >&2; exit 2; }
S=$(realpath -m "$1"); shift; [ "${1:-}" = "--" ] && shift
for tool in unshare ip rpcbind rpcinfo ganesha.nfsd nfs-ls; do
  command -v "$tool" >/dev/null || { echo "nfs-sandbox: $tool is missing (apt-get install nfs-ganesha nfs-ganesha-vfs libnfs-utils iproute2 util-linux)" >&2; exit 97; }
done
# Servers of an earlier sandbox that was killed can outlive it (they are in its namespace): stop them by pid.
for pidfile in "$S/run/ganesha.pid" "$S/run/rpcbind.pid"; do
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
done
mkdir -p "$S/export" "$S/run" "$S/recov" "$S/log"
cat > "$S/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = 2049;
    MNT_Port = 20048;           # fixed mountd port (the default is random)
    Protocols = 3, 4;
    Enable_NLM = false;         # no lockd/statd
    Enable_RQUOTA = false;
    Enable_UDP = false;
    mount_path_pseudo = true;   # NFSv3 MOUNT uses the pseudo path (/export), not the real directory
}
NFSV4 {
    Graceless = true;           # no 90 s grace period at start
    Only_Numeric_Owners = true;
    RecoveryRoot = $S/recov;
}
EXPORT {
    Export_Id = 1;
    Path = $S/export;
    Pseudo = /export;
    Access_Type = RW;
    Squash = No_Root_Squash;
    Attr_Expiration_Time = 0;   # changes made directly in the directory are seen at once
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
CONF
exec unshare --net --mount --propagation private -- bash -c '
set -u
S=$1; shift
ip link set lo up
ip addr add 127.0.0.2/8 dev lo   # ganesha resolves Bind_addr with AI_ADDRCONFIG, which ignores a lone 127.0.0.1
mount --bind "$S/run" /run       # rpcbind.sock, rpcbind.lock and /run/ganesha stay private to this namespace
rpcbind -f > "$S/log/rpcbind.out" 2>&1 & RPCB=$!; echo $RPCB > "$S/run/rpcbind.pid"
GAN=
cleanup() { if [ -n "$GAN" ]; then kill $GAN 2>/dev/null && wait $GAN; fi; kill $RPCB 2>/dev/null && wait $RPCB; rm -f "$S/run/rpcbind.pid" "$S/run/ganesha.pid"; }
trap cleanup EXIT
for i in $(seq 200); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.05; done
ganesha.nfsd -F -L "$S/log/ganesha.log" -f "$S/ganesha.conf" -N NIV_EVENT -p "$S/run/ganesha.pid" > "$S/log/ganesha.out" 2>&1 & GAN=$!
for i in $(seq 200); do nfs-ls nfs://127.0.0.1/export/ >/dev/null 2>&1 && break; sleep 0.05; done
nfs-ls nfs://127.0.0.1/export/ >/dev/null || { echo "nfs-sandbox: the server did not come up, see $S/log" >&2; exit 98; }
export NFS_SANDBOX_URL=nfs://127.0.0.1/export NFS_SANDBOX_DIR="$S/export"
"$@"
' nfs-sandbox "$S" "$@"
