#!/usr/bin/env bash
# Builds a guest to boot under QEMU without Xen: Debian's current kernel (downloaded with
# apt-get, extracted, never installed) and a busybox initramfs holding chosen kernel modules,
# host binaries with their shared libraries, extra files and a test script.
#
# usage: build.sh OUT_DIR
# env:
#   GUEST_CACHE     where the kernel package is kept between runs (default ~/.cache/xapi-guest)
#   GUEST_MODULES   kernel modules to load at boot, dependencies first (e.g. "virtio_pci virtio_blk dm-snapshot")
#   GUEST_BINARIES  host executables to copy, with their ldd closure (e.g. "/usr/sbin/lvm")
#   GUEST_LIBRARIES host shared libraries to copy with their closure (e.g. libstdc++ for .NET)
#   GUEST_FILES     "SRC:DEST ..." files copied into the initramfs
#   GUEST_TEST      the script the guest runs (as /guest/test.sh) once booted
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.gz and OUT_DIR/kernel-version.
# Debian packages it needs: busybox-static cpio kmod (modprobe, depmod) and apt's own tools.
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cache=${GUEST_CACHE:-$HOME/.cache/xapi-guest}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)

# The kernel: whatever linux-image-amd64 points at today (it moves with Debian's updates).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
kver=${kpkg#linux-image-}
kroot=$cache/$kpkg
if [ ! -f "$kroot/.done" ]; then
  rm -rf "$kroot" && mkdir -p "$kroot/debs"
  (cd "$kroot/debs" && apt-get download "$kpkg" 2>/dev/null || { apt-get update -qq && apt-get download "$kpkg"; })
  dpkg-deb -x "$kroot"/debs/*.deb "$kroot/root"
  depmod -b "$kroot/root" "$kver"
  rm -rf "$kroot/debs"
  touch "$kroot/.done"
fi
cp "$kroot/root/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" > "$out/kernel-version"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,guest,lib/modules}
cp /bin/busybox "$stage/bin/busybox"
cp "$here/init.sh" "$stage/init"
chmod +x "$stage/init"
[ -n "${GUEST_TEST:-}" ] && cp "$GUEST_TEST" "$stage/guest/test.sh"

# Modules with their dependencies, in load order, as insmod lines resolve them.
: > "$stage/etc/guest-modules"
for module in ${GUEST_MODULES:-}; do
  modprobe -d "$kroot/root" -S "$kver" --show-depends "$module" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    name=$(basename "$ko")
    if ! grep -qx "/lib/modules/$name" "$stage/etc/guest-modules"; then
      cp "$ko" "$stage/lib/modules/$name"
      echo "/lib/modules/$name" >> "$stage/etc/guest-modules"
    fi
  done
done

# Host binaries and libraries at their own paths, with every library ldd resolves for them.
copy_closure() {
  local file=$1
  mkdir -p "$stage$(dirname "$file")"
  cp -L "$file" "$stage$file"
  { ldd "$file" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
    if [ -f "$lib" ] && [ ! -e "$stage$lib" ]; then
      mkdir -p "$stage$(dirname "$lib")"
      cp -L "$lib" "$stage$lib"
    fi
  done
}
for binary in ${GUEST_BINARIES:-} ${GUEST_LIBRARIES:-}; do
  copy_closure "$binary"
done
for pair in ${GUEST_FILES:-}; do
  mkdir -p "$stage$(dirname "${pair#*:}")"
  cp -L "${pair%%:*}" "$stage${pair#*:}"
done

(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initrd.gz")
echo "guest built: kernel $kver, initrd $(du -h "$out/initrd.gz" | cut -f1)"
