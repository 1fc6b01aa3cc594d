#!/usr/bin/env bash
# Runs the lvm driver's scenario program in a QEMU guest that has device-mapper (this host
# may have none): builds the guest (../build.sh), packs the host's .NET runtime and the
# program into a tar given to the guest as a second virtio disk, boots it (../run.sh) with an
# empty 128 MiB disk as the PV, and prints the serial console (SCENARIO lines) on stdout.
# usage: run-scenario.sh SCENARIO_BUILD_DIR [WORK_DIR]
#   SCENARIO_BUILD_DIR: the output folder of tests/Xapi.Storage.LvmScenario (bin/Release/net10.0)
# Exit status: 0 when the guest's scenario passed every check.
# Debian packages: lvm2 (its lvm binary is copied into the guest), util-linux (setpriv),
# qemu-system-x86, busybox-static, cpio, kmod; the kernel comes from apt-get download.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scenario=$(cd "${1:?usage: run-scenario.sh SCENARIO_BUILD_DIR [WORK_DIR]}" && pwd)
work=${2:-$(mktemp -d)}
mkdir -p "$work"

# The host's own .NET runtime, framework-dependent: the program runs on the same version.
runtime=$(dotnet --list-runtimes | awk '$1=="Microsoft.NETCore.App" && $2 ~ /^10\./ {v=$2; d=$3} END {gsub(/[][]/, "", d); print d "/" v}')
version=$(basename "$runtime")
dotnet_root=$(cd "$runtime/../../.." && pwd)
[ -f "$runtime/libcoreclr.so" ] || { echo "no .NET 10 runtime found ($runtime)" >&2; exit 2; }

rm -f "$work/payload.tar"
tar -cf "$work/payload.tar" -C "$dotnet_root" --transform 's,^,dotnet/,' dotnet "host/fxr/$version" "shared/Microsoft.NETCore.App/$version"
tar -rf "$work/payload.tar" -C "$scenario" --transform 's,^\.,scenario,' .

libraries=$(ldd "$dotnet_root/dotnet" "$runtime"/*.so 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u | tr '\n' ' ')
# OpenSSL is opened at run time (SHA-256 and the like), so ldd cannot see it (Debian's libssl3).
libraries="$libraries $(ldconfig -p | awk '$1=="libssl.so.3" || $1=="libcrypto.so.3" {print $NF}' | sort -u | tr '\n' ' ')"
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
