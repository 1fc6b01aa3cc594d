#!/bin/busybox sh
# dom0's /init (tests/xen/run.sh boots it under Xen in QEMU): mounts, loads the Xen modules,
# starts the toolstack daemons (xenstored, xen-init-dom0, xenconsoled), unpacks the payload (the
# tar on the first virtio disk) into /opt, runs /scenario.sh, and ends QEMU with the number of
# failed steps through the isa-debug-exit port (QEMU exits with (status << 1) | 1, so 1 = passed).
# Every line goes to the serial console (hvc0, which Xen copies to COM1).
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# devtmpfs has no /dev/stdin or /dev/fd; Xen's hotplug scripts (locking.sh) spin without them.
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/xen /var/run/xen /var/log/xen/console /var/lib/xen
hostname xen-dom0
uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "XAPI-STEP dom0-boot OK kernel $(uname -r) at uptime $(uptime_s)s"
while read -r module; do
  insmod "$module" 2>/dev/null || echo "DOM0 module $module failed to load"
done < /etc/dom0-modules
status=1
if mount -t xenfs xenfs /proc/xen && grep -q control_d /proc/xen/capabilities; then
  # The toolstack as Debian's xencommons starts it.
  xenstored --pid-file /run/xenstored.pid
  xen-init-dom0 >/dev/null
  xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
  echo "DOM0 toolstack started at uptime $(uptime_s)s"
  ip link set lo up
  sh /scenario.sh
  status=$?
else
  echo "XAPI-STEP dom0-control-domain FAIL /proc/xen/capabilities has no control_d"
fi
echo "XAPI-END status=$status uptime=$(uptime_s)s"
sync
# One byte to port 0xf4 ends QEMU at once; poweroff is the fallback without the device.
printf "\\$(printf %o $((status & 0x7f)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
