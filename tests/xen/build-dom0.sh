#!/usr/bin/env bash
# Builds what tests/xen/run.sh boots: Debian's Xen 4.17 hypervisor and a dom0 (Debian's current
# kernel and a busybox initramfs with the Xen toolstack). Packages come from `apt-get download`
# and are extracted with dpkg-deb into a cache outside the repository; nothing is installed on
# this host and nothing downloaded or built here is kept in the repository.
#
# usage: build-dom0.sh OUT_DIR
# env:
#   XEN_CACHE  where the extracted packages are kept between runs
#              (default ${XDG_CACHE_HOME:-$HOME/.cache}/xapi-xen)
# Writes OUT_DIR/xen (the hypervisor, an ELF32 multiboot image QEMU's -kernel takes),
# OUT_DIR/vmlinuz, OUT_DIR/dom0-initrd.gz and OUT_DIR/versions.
# Host packages it needs: busybox-static cpio kmod (depmod), seabios (with qemu-system-x86), apt's own tools, and the host's glibc
# and libstdc++ (copied into dom0 with the Xen tools' ldd closure).
set -euo pipefail
out=${1:?usage: build-dom0.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cache=${XEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xapi-xen}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)

# The kernel moves with Debian's updates: whatever linux-image-amd64 points at today.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
kver=${kpkg#linux-image-}
# extracted NAME PACKAGE...: the packages downloaded and extracted into the cache, one tree per
# set of package versions (a Debian update makes a new one); prints the tree's folder, whose
# "packages" file lists the .deb files.
extracted() {
  name=$1; shift
  versions=$(apt-cache policy "$@" | awk '/^[^ ]/{p=$1} /Candidate:/{print p $2}' | tr -d ':' | sort | md5sum | cut -c1-12)
  root=$cache/$name-$versions
  if [ ! -f "$root/.done" ]; then
    rm -rf "$root" && mkdir -p "$root/debs"
    (cd "$root/debs" && { apt-get download "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$@" >/dev/null; }; })
    for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root/tree"; done
    (cd "$root/debs" && ls) > "$root/packages"
    rm -rf "$root/debs"
    touch "$root/.done"
  fi
  echo "$root"
}
# libxenlight and libxenctrl are in libxenmisc4.17; the rest are the libraries xl links to.
root=$(extracted root xen-hypervisor-4.17-amd64 xen-utils-4.17 libxenmisc4.17 xen-utils-common xenstore-utils \
  libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenstore4 libxentoollog1 \
  libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2 qemu-system-xen "$kpkg")
R=$root/tree
[ -f "$R/lib/modules/$kver/modules.dep" ] || depmod -b "$R" "$kver"
zcat "$R/boot/xen-4.17-amd64.gz" > "$out/xen"
cp "$R/boot/vmlinuz-$kver" "$out/vmlinuz"
{ echo "kernel $kver"; cat "$root/packages"; } > "$out/versions"

stage=$(mktemp -d)
G=$(mktemp -d)
trap 'rm -rf "$stage" "$G"' EXIT
D=$stage
mkdir -p $D/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,root,mnt,opt,lib64,lib/modules} \
  $D/var/lib/xen $D/var/log/xen $D/var/run $D/var/lib/xenstored
cp /bin/busybox $D/bin/busybox
# The Xen tools at Debian's paths.
mkdir -p $D/usr/lib/xen-4.17 $D/usr/lib/x86_64-linux-gnu $D/etc/xen
cp -a "$R/usr/lib/xen-4.17/bin" "$R/usr/lib/xen-4.17/lib" "$R/usr/lib/xen-4.17/boot" "$D/usr/lib/xen-4.17/"
cp -a "$R/usr/lib/x86_64-linux-gnu/." "$D/usr/lib/x86_64-linux-gnu/"
cp -a "$R/etc/xen/." "$D/etc/xen/"
cp -a "$R"/usr/bin/xenstore* "$D/usr/bin/"

# The guest disks' backends: qemu-system-xen's xen-qemu-system-i386, which libxl starts for a
# qdisk (qcow2) disk, with the en-us keymap it loads even for "-vnc none" (it exits without it;
# qemu-system-data, beside the host's QEMU); for blkback and the vif, the hotplug scripts' bash,
# losetup, flock (busybox has none) and ip; for the ext SR, qemu-img and qemu-nbd (run under
# setpriv). These come from this host, with their ldd closure below.
mkdir -p $D/usr/libexec $D/usr/share/qemu/keymaps
cp "$R/usr/libexec/xen-qemu-system-i386" $D/usr/libexec/
cp /usr/share/qemu/keymaps/en-us $D/usr/share/qemu/keymaps/
# An HVM guest's firmware: Xen's hvmloader (above, in xen-4.17/boot) loads SeaBIOS from the path
# libxl was built with, and qemu hands SeaBIOS the VGA card's option ROM (cirrus by default, std
# with platform:vga=std). They come from the host's seabios, which qemu-system-x86 brings.
mkdir -p $D/usr/share/seabios
for rom in /usr/share/seabios/bios-256k.bin /usr/share/seabios/vgabios-cirrus.bin /usr/share/seabios/vgabios-stdvga.bin; do
  [ -f "$rom" ] || { echo "build-dom0: $rom is missing on this host (seabios)" >&2; exit 2; }
done
cp /usr/share/seabios/bios-256k.bin $D/usr/share/seabios/
cp /usr/share/seabios/vgabios-cirrus.bin /usr/share/seabios/vgabios-stdvga.bin $D/usr/share/qemu/
host_tools="/bin/bash /usr/sbin/losetup /usr/bin/flock /usr/sbin/ip /usr/bin/qemu-img /usr/bin/qemu-nbd /usr/bin/setpriv"
for tool in $host_tools; do
  [ -x "$tool" ] || { echo "build-dom0: $tool is missing on this host (bash util-linux iproute2 qemu-utils)" >&2; exit 2; }
  mkdir -p "$D$(dirname "$tool")" && cp -L "$tool" "$D$tool"
done

# Shared libraries of the tools that are not Xen's own: the host's (a Debian 12 host, as the
# packages are). glibc dlopen()s libgcc_s for pthread_cancel (xl create aborts without it); a
# .NET program needs libstdc++ besides (the daemon's apphost and runtime).
export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:$R/usr/lib/xen-4.17/lib/x86_64-linux-gnu
# (ldd of a script says "not a dynamic executable" and lists nothing.)
files="$(find "$R/usr/lib/xen-4.17/bin" "$R/usr/bin" "$R/usr/lib/x86_64-linux-gnu" -type f) $R/usr/libexec/xen-qemu-system-i386 $host_tools"
# A library the host lacks would only show when libxl starts qemu in dom0: say so now.
if unresolved=$(ldd "$R/usr/libexec/xen-qemu-system-i386" $host_tools 2>/dev/null | grep 'not found'); then
  echo "build-dom0: libraries missing on this host: $(echo "$unresolved" | awk '{print $1}' | sort -u | tr '\n' ' ')" >&2; exit 2
fi
# The .NET host and runtime open libdl, libpthread, librt and libm by name (glibc 2.36 keeps
# them as stubs); ldd of the Xen tools does not list them.
host_libs=$(for l in libgcc_s.so.1 libstdc++.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libm.so.6; do echo /lib/x86_64-linux-gnu/$l; done)
for f in $files $host_libs; do
  { ldd "$f" 2>/dev/null || true; } | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
  case "$lib" in "$R"/*) continue ;; esac
  [ -e "$D$lib" ] || { mkdir -p "$D$(dirname "$lib")"; cp -L "$lib" "$D$lib"; }
done
for lib in $host_libs /lib64/ld-linux-x86-64.so.2; do mkdir -p "$D$(dirname "$lib")"; cp -L "$lib" "$D$lib"; done
# OpenSSL is opened at run time by .NET (the password hash's SHA-256), so ldd cannot see it.
for lib in $(ldconfig -p | awk '$1=="libssl.so.3" || $1=="libcrypto.so.3" {print $NF}' | sort -u); do
  mkdir -p "$D$(dirname "$lib")"; cp -L "$lib" "$D$lib"
done

# Kernel modules, dependencies first, in the order /init loads them.
: > $D/etc/dom0-modules
for module in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback virtio_pci virtio_blk loop bridge; do
  modprobe -d "$R" -S "$kver" --show-depends "$module" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    name=$(basename "$ko")
    if ! grep -qx "/lib/modules/$name" $D/etc/dom0-modules; then
      cp "$ko" "$D/lib/modules/$name"
      echo "/lib/modules/$name" >> $D/etc/dom0-modules
    fi
  done
done

# The guest the scenario boots through the daemon (PV, direct kernel boot): the same Debian
# kernel, and a busybox initramfs whose /init prints a marker on hvc0 and waits. Linux answers the
# toolstack's shutdown request by running /sbin/poweroff (orderly_poweroff): it is provided, and
# powers off at once. With xtest=selfoff on its command line the guest powers itself off; with
# xtest=ignore its /sbin/poweroff does nothing (a guest that ignores a clean shutdown).
mkdir -p $D/guest
cp "$R/boot/vmlinuz-$kver" $D/guest/vmlinuz
mkdir -p $G/bin $G/sbin $G/proc $G/sys $G/dev $G/lib/modules
cp /bin/busybox $G/bin/busybox
# A guest agent's one tool, xenstore-write, with its libraries: with xtest=disknet the guest
# publishes what xe-guest-utilities would (OS, PV drivers, its address) in its xenstore tree.
mkdir -p $G/usr/bin
cp "$R/usr/bin/xenstore-write" $G/usr/bin/
for lib in $(LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu ldd "$R/usr/bin/xenstore-write" | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  case "$lib" in "$R"/*) dest=/usr/lib/x86_64-linux-gnu/$(basename "$lib") ;; *) dest=$lib ;; esac
  mkdir -p "$G$(dirname "$dest")" && cp -L "$lib" "$G$dest"
done
# Its disk and network frontends, for xtest=disknet, and an emulated IDE CD drive, for xtest=cd.
for module in xen-blkfront xen-netfront ata_piix sr_mod; do
  modprobe -d "$R" -S "$kver" --show-depends "$module" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    grep -qx "$(basename "$ko")" $G/lib/modules/order 2>/dev/null || { cp "$ko" $G/lib/modules/ && basename "$ko" >> $G/lib/modules/order; }
  done
done
cat > $G/init <<'GUEST'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "XAPI-GUEST up: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU(s), $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB; cmdline: $(cat /proc/cmdline)"
case " $(cat /proc/cmdline) " in
  *" xtest=cd "*)
    # An HVM guest's emulated CD drive: what it holds is read every second (opening the drive
    # makes the kernel look for a new disc) and each change is printed.
    for ko in $(cat /lib/modules/order); do insmod /lib/modules/$ko 2>/dev/null; done
    last=
    while true; do
      seen="$(cat /sys/block/sr0/size 2>/dev/null) sectors, md5 of its first MiB $(dd if=/dev/sr0 bs=2048 count=512 2>/dev/null | md5sum | cut -d' ' -f1)"
      [ "$seen" = "$last" ] || echo "XAPI-GUEST cd sr0: $seen"
      last=$seen
      sleep 1
    done ;;
  *" xtest=selfoff "*) sleep 3; echo "XAPI-GUEST powering itself off"; sync; /bin/busybox poweroff -f ;;
  *" xtest=disknet "*)
    # The VDI the toolstack attached: what was imported into it is read, a stamp is written at
    # sector 4096 for the host to export; then dom0 is pinged over the vif.
    for ko in $(cat /lib/modules/order); do insmod /lib/modules/$ko 2>/dev/null; done
    i=0; while [ ! -b /dev/xvda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    echo "XAPI-GUEST disk xvda: $(cat /sys/block/xvda/size 2>/dev/null) sectors, md5 of its first MiB $(dd if=/dev/xvda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
    stamp="XAPI-GUEST-WROTE-$(cat /proc/sys/kernel/random/uuid)"
    echo "$stamp" | dd of=/dev/xvda bs=512 seek=4096 conv=notrunc,sync,fsync 2>/dev/null && echo "XAPI-GUEST disk wrote $stamp at sector 4096"
    guestip=; for a in $(cat /proc/cmdline); do case $a in guestip=*) guestip=${a#guestip=} ;; esac; done
    i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    ip link set lo up; ip addr add "$guestip/24" dev eth0; ip link set eth0 up
    if ping -c 2 -w 20 10.0.0.1 >/dev/null 2>&1; then echo "XAPI-GUEST net eth0 $(cat /sys/class/net/eth0/address) $guestip pinged dom0 10.0.0.1"; else echo "XAPI-GUEST net eth0 $(cat /sys/class/net/eth0/address 2>/dev/null) $guestip could not ping dom0"; fi
    # Relative paths are the domain's own tree, which the guest may write.
    if LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu /usr/bin/xenstore-write data/os_name "XAPI busybox guest" data/os_uname "$(uname -r)" data/os_distro busybox \
        attr/PVAddons/MajorVersion 9 attr/PVAddons/MinorVersion 1 attr/PVAddons/MicroVersion 0 attr/vif/0/ipv4/0 "$guestip" data/updated 1; then
      echo "XAPI-GUEST agent published its OS, PV drivers 9.1.0 and $guestip in xenstore"
    else
      echo "XAPI-GUEST agent could not write xenstore"
    fi
    ;;
esac
while true; do sleep 60; done
GUEST
cat > $G/sbin/poweroff <<'GUEST'
#!/bin/busybox sh
case " $(cat /proc/cmdline) " in
  *" xtest=ignore "*) echo "XAPI-GUEST ignoring the toolstack's poweroff request" > /dev/console; exit 0 ;;
esac
echo "XAPI-GUEST poweroff requested by the toolstack" > /dev/console
/bin/busybox sync
/bin/busybox poweroff -f
GUEST
chmod +x $G/init $G/sbin/poweroff
(cd $G && find . | cpio -o -H newc --quiet | gzip -9) > $D/guest/initrd.gz

# The HVM guest's boot disk: the same kernel and initramfs behind syslinux on a FAT file system
# (no partition table: SeaBIOS runs the file system's boot sector). syslinux installs itself
# through mtools, so nothing is mounted; the four packages are extracted like the Xen ones.
B=$(extracted boot syslinux syslinux-common mtools dosfstools)/tree
mkfs_fat=$(find "$B" -name mkfs.fat -type f | head -1)
boot_disk=$D/guest/hvm-boot.raw
rm -f "$boot_disk" && truncate -s 24M "$boot_disk"
"$mkfs_fat" -F 16 -n XAPIHVM "$boot_disk" >/dev/null
cat > $stage/syslinux.cfg <<'CFG'
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet xtest=cd
CFG
export MTOOLS_SKIP_CHECK=1
PATH=$B/usr/bin:$PATH "$B/usr/bin/syslinux" --install "$boot_disk"
for file in $D/guest/vmlinuz $D/guest/initrd.gz $stage/syslinux.cfg; do
  "$B/usr/bin/mcopy" -i "$boot_disk" "$file" "::$(basename "$file")"
done
rm $stage/syslinux.cfg

# The data the scenario imports into the guest's VDI: 1 MiB of random bytes, then zeros to 8 MiB.
head -c 1M /dev/urandom > $D/guest/disk.raw
truncate -s 8M $D/guest/disk.raw

cp "$here/dom0-init.sh" $D/init
cp "$here/scenario.sh" $D/scenario.sh
chmod +x $D/init $D/scenario.sh
(cd $D && find . | cpio -o -H newc --quiet | gzip -1) > "$out/dom0-initrd.gz"
echo "dom0 built: Xen $(sed -n 's/^xen-hypervisor-4.17-amd64_\([^_]*\)_.*/\1/p' "$out/versions"), kernel $kver, initrd $(du -h "$out/dom0-initrd.gz" | cut -f1)"
