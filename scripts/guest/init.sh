#!/bin/busybox sh
# The guest's /init: mounts, loads the modules listed in /etc/guest-modules, runs
# /guest/test.sh, and ends QEMU with the script's status through the isa-debug-exit port
# (QEMU then exits with (status << 1) | 1). Every line goes to the serial console.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
while read -r module; do
  insmod "$module" || echo "GUEST module $module failed to load"
done < /etc/guest-modules
echo "GUEST booted uptime=$(cut -d' ' -f1 /proc/uptime)"
status=1
if [ -x /guest/test.sh ] || [ -f /guest/test.sh ]; then
  sh /guest/test.sh
  status=$?
fi
echo "GUEST done status=$status uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
# One byte to port 0xf4 ends QEMU at once; poweroff is the fallback without the device.
printf "\\$(printf %o $((status & 0x7f)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
