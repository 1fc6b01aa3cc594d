#!/usr/bin/env bash
# Real Xen in the test suite: boots Debian's Xen 4.17 under QEMU (TCG: no hardware
# virtualisation needed) with a dom0 that runs tests/xen/scenario.sh against the daemon published
# self-contained for linux-x64, and exits 0 only when every step of the scenario passed.
#
# usage: bash tests/xen/run.sh
# env:
#   XEN_WORK       work folder (default: a new temporary one, removed at the end unless XEN_KEEP=1)
#   XEN_PUBLISHED  a folder that already holds the published daemon, xe and Xapi.Xen.Dom0Check
#                  (skips the publish; the test wrapper passes its own)
#   XEN_TIMEOUT    seconds before QEMU is stopped (default 600)
#   XEN_SILENCE    seconds without a serial line before the run is called hung (default 180)
#   XEN_CACHE      where the Debian packages are kept (see build-dom0.sh)
# Prints the scenario's XAPI-STEP lines and the timings; the serial log is WORK/serial.log and,
# on failure, its tail is printed. Host packages: qemu-system-x86 busybox-static cpio kmod, the
# .NET 10 SDK with the linux-x64 runtime packs; the Xen and kernel packages come from apt-get download.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
keep=${XEN_KEEP:-0}
if [ -n "${XEN_WORK:-}" ]; then work=$XEN_WORK; keep=1; else work=$(mktemp -d -t xapi-xen.XXXXXX); fi
mkdir -p "$work" && work=$(cd "$work" && pwd)
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
command -v qemu-system-x86_64 >/dev/null || { echo "xen: qemu-system-x86_64 not found (install qemu-system-x86)" >&2; exit 2; }

t=$(now)
bash "$here/build-dom0.sh" "$work/boot"
echo "xen: dom0 built in $(since "$t")s"

published=${XEN_PUBLISHED:-}
if [ -z "$published" ]; then
  t=$(now)
  published=$work/published
  # Self-contained: dom0 has no .NET. The three programs share one runtime in one folder (the
  # daemon's publish brings xe, which it references, self-contained too). ReadyToRun: JIT is most
  # of the time under TCG (measured in dom0 on a loaded host: daemon start 70 s instead of 105-156 s).
  for project in src/Xapi.Server tests/Xapi.Xen.Dom0Check; do
    dotnet publish "$repo/$project" -c Release -r linux-x64 --self-contained -p:PublishReadyToRun=true -nologo -v quiet -o "$published" >&2
  done
  echo "xen: published in $(since "$t")s"
fi
for program in xapi-dotnet xe Xapi.Xen.Dom0Check; do
  [ -x "$published/$program" ] || { echo "xen: $published/$program is missing (publish it self-contained for linux-x64)" >&2; exit 2; }
done
# The payload is a raw tar on a virtio disk: dom0 unpacks it into /opt (faster than 9p under TCG).
tar -cf "$work/payload.tar" -C "$published" --transform 's,^\.,xapi,' .

log=$work/serial.log
: > "$log"
t=$(now)
# -no-reboot with Xen rebooting on a dom0 crash (no "noreboot") ends the run seconds after one.
# +svm,+npt: PVH guests need hardware-assisted paging (Debian's Xen has no shadow paging).
timeout -k 5 "${XEN_TIMEOUT:-600}" qemu-system-x86_64 -machine q35 -cpu qemu64,+svm,+npt -smp 2 -m 2048 \
  -display none -monitor none -serial "file:$log" -no-reboot -nodefaults \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$work/boot/xen" \
  -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=1024M,max:1024M dom0_max_vcpus=2" \
  -initrd "$work/boot/vmlinuz console=hvc0 earlyprintk=xen quiet loglevel=4,$work/boot/dom0-initrd.gz" \
  -drive "file=$work/payload.tar,format=raw,if=virtio,readonly=on" </dev/null &
qemu=$!
# A hang (no serial line for XEN_SILENCE seconds) ends the run early.
hung=0 size=-1 quiet_since=$(date +%s)
while kill -0 $qemu 2>/dev/null; do
  sleep 2
  current=$(stat -c %s "$log")
  if [ "$current" != "$size" ]; then size=$current quiet_since=$(date +%s)
  elif [ $(( $(date +%s) - quiet_since )) -ge "${XEN_SILENCE:-180}" ]; then hung=1; kill $qemu 2>/dev/null || true; break; fi
done
set +e
wait $qemu
status=$?
set -e
boot=$(since "$t")

grep -a '^XAPI-STEP ' "$log" | tr -d '\r' || true
failed=()
grep -aq '(XEN) Xen version 4\.17' "$log" || failed+=("no Xen 4.17 banner on the serial console")
[ "$hung" = 0 ] || failed+=("hung: no serial output for ${XEN_SILENCE:-180}s")
grep -aq '^XAPI-STEP .* FAIL' "$log" && failed+=("failed steps: $(grep -a '^XAPI-STEP .* FAIL' "$log" | awk '{print $2}' | tr '\n' ' ')")
grep -aq '^XAPI-END status=0' "$log" || failed+=("dom0 did not finish the scenario")
# QEMU's isa-debug-exit status is (dom0's status << 1) | 1; 0 is a reboot (a crash), 124 the timeout.
case $status in
  1) ;;
  0) failed+=("QEMU exited without a result: Xen rebooted ($(grep -a -m1 -E 'Hardware Dom0 crashed|Panic on CPU|Kernel panic' "$log" | tr -d '\r' || echo "no crash message"))") ;;
  124|137) failed+=("timed out after ${XEN_TIMEOUT:-600}s") ;;
  *) failed+=("QEMU exit status $status") ;;
esac
echo "xen: QEMU ran ${boot}s, exit status $status; log $log"
if [ ${#failed[@]} -gt 0 ]; then
  # Kept for a look (the serial log, the boot files), without the large payload.
  [ -n "${XEN_WORK:-}" ] || { keep=1; rm -rf "$work/payload.tar" "$work/published"; }
  echo "xen: FAILED: $(IFS=';'; echo "${failed[*]}")"
  echo "xen: serial log tail ($log):"
  tail -n 80 "$log" | tr -d '\r'
  exit 1
fi
echo "xen: PASSED"
