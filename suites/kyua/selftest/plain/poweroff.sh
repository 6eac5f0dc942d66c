#!/bin/sh
# Broken: powers off the machine it runs in (lab's guest only). Anywhere else it refuses and
# fails: a guest of lab boots its initramfs with /init as PID 1 and names itself "lab".
init=$(tr '\0' '\n' < /proc/1/cmdline | head -n 1)
if [ "$init" != /init ] || [ "$(cat /etc/hostname 2>/dev/null)" != lab ]; then
    echo "poweroff.sh: not in a lab guest (PID 1 is '$init'); refusing to power off" >&2
    exit 2
fi
sync
echo o > /proc/sysrq-trigger
sleep 5
poweroff -f
sleep 60
exit 0
