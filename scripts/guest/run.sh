#!/usr/bin/env bash
# Boots a guest built by build.sh under QEMU (TCG: no KVM needed); the serial console is
# this script's standard output. Ends when the guest's test ends (QEMU exits with
# (status << 1) | 1, so 1 means the test passed) or after GUEST_TIMEOUT seconds (exit 124).
# usage: run.sh GUEST_DIR [extra qemu arguments: -drive ...]
# env: GUEST_TIMEOUT (default 180), GUEST_MEMORY (MiB, default 1536), GUEST_APPEND (kernel arguments)
# Debian packages it needs: qemu-system-x86.
set -euo pipefail
dir=${1:?usage: run.sh GUEST_DIR [qemu args]}; shift
exec timeout -k 5 "${GUEST_TIMEOUT:-180}" qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m "${GUEST_MEMORY:-1536}" \
  -display none -monitor none -serial stdio -no-reboot -nodefaults \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$dir/vmlinuz" -initrd "$dir/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 ${GUEST_APPEND:-}" "$@" </dev/null
