#!/usr/bin/env bash
# Runs the lvm SR scenario in a QEMU guest that has device-mapper (this host may have none):
# builds the guest (../build.sh), packs the host's .NET runtime (Microsoft.NETCore.App and
# Microsoft.AspNetCore.App), the published daemon and the scenario program into a tar given to
# the guest as a second virtio disk, boots it (../run.sh) with an empty 128 MiB disk as the PV,
# and prints the serial console (SCENARIO lines) on stdout. In the guest the scenario program
# starts the daemon and drives an lvm SR on /dev/vda over the XenAPI wire and HTTP.
# usage: run-scenario.sh SCENARIO_BUILD_DIR DAEMON_DIR [WORK_DIR]
#   SCENARIO_BUILD_DIR: the output folder of tests/Xapi.Storage.LvmScenario (bin/Release/net10.0)
#   DAEMON_DIR: the daemon published framework-dependent:
#               dotnet publish src/Xapi.Server -c Release -o DAEMON_DIR
# Exit status: 0 when the guest's scenario passed every check.
# Debian packages: lvm2 (its lvm binary is copied into the guest), util-linux (setpriv),
# qemu-system-x86, busybox-static, cpio, kmod; the kernel comes from apt-get download.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scenario=$(cd "${1:?usage: run-scenario.sh SCENARIO_BUILD_DIR DAEMON_DIR [WORK_DIR]}" && pwd)
daemon=$(cd "${2:?usage: run-scenario.sh SCENARIO_BUILD_DIR DAEMON_DIR [WORK_DIR]}" && pwd)
work=${3:-$(mktemp -d)}
mkdir -p "$work"
[ -f "$daemon/xapi-dotnet.dll" ] || { echo "no published daemon in $daemon" >&2; exit 2; }

# The host's own .NET runtime, framework-dependent: both programs run on the same version,
# and the daemon (an ASP.NET Core app) on the ASP.NET Core framework of that version too.
runtime=$(dotnet --list-runtimes | awk '$1=="Microsoft.NETCore.App" && $2 ~ /^10\./ {v=$2; d=$3} END {gsub(/[][]/, "", d); print d "/" v}')
version=$(basename "$runtime")
dotnet_root=$(cd "$runtime/../../.." && pwd)
[ -f "$runtime/libcoreclr.so" ] || { echo "no .NET 10 runtime found ($runtime)" >&2; exit 2; }
[ -d "$dotnet_root/shared/Microsoft.AspNetCore.App/$version" ] || { echo "no ASP.NET Core runtime $version in $dotnet_root" >&2; exit 2; }

rm -f "$work/payload.tar"
tar -cf "$work/payload.tar" -C "$dotnet_root" --transform 's,^,dotnet/,' dotnet "host/fxr/$version" \
  "shared/Microsoft.NETCore.App/$version" "shared/Microsoft.AspNetCore.App/$version"
tar -rf "$work/payload.tar" -C "$scenario" --transform 's,^\.,scenario,' .
tar -rf "$work/payload.tar" -C "$daemon" --transform 's,^\.,xapi,' .

# ASP.NET Core is managed code only: the native libraries are the runtime's.
libraries=$(ldd "$dotnet_root/dotnet" "$runtime"/*.so 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u | tr '\n' ' ')
# OpenSSL is opened at run time (SHA-256, the password hash), so ldd cannot see it (Debian's libssl3).
libraries="$libraries $(ldconfig -p | awk '$1=="libssl.so.3" || $1=="libcrypto.so.3" {print $NF}' | sort -u | tr '\n' ' ')"
# The daemon runs lvm (lvm2) under setpriv for the lvm SR; nothing else: the first-boot ext SR
# on an empty directory is made, plugged and scanned without qemu-img (only VDIs need it).
GUEST_MODULES="virtio_pci virtio_blk dm-mod dm-snapshot loop" \
GUEST_BINARIES="$(command -v lvm) $(command -v setpriv)" \
GUEST_LIBRARIES="$libraries" \
GUEST_FILES="$here/lvm.conf:/etc/lvm/lvm.conf" \
GUEST_TEST="$here/guest-test.sh" \
  "$here/../build.sh" "$work/guest" >&2

rm -f "$work/pv.img"
truncate -s 128M "$work/pv.img"
set +e
"$here/../run.sh" "$work/guest" \
  -drive "file=$work/pv.img,format=raw,if=virtio,cache=unsafe" \
  -drive "file=$work/payload.tar,format=raw,if=virtio,readonly=on"
status=$?
set -e
# QEMU's isa-debug-exit status is (guest status << 1) | 1: 1 is a guest that passed.
[ "$status" -eq 1 ]
