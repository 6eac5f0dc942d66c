#!/bin/sh
# required_kvm=true: the guest runs KVM itself, so /dev/kvm is there and opens read-write.
[ -c /dev/kvm ] || { echo "no /dev/kvm"; exit 1; }
exec 3<>/dev/kvm || { echo "cannot open /dev/kvm"; exit 1; }
grep -qE '^kvm_(amd|intel) ' /proc/modules || { echo "no kvm_amd or kvm_intel loaded"; exit 1; }
