#!/bin/sh
# required_kmods='veth': lab loaded veth before this case ran.
grep -q '^veth ' /proc/modules || { echo "veth is not loaded"; exit 1; }
ip link add lab_v0 type veth peer name lab_v1 || exit 1
ip link del lab_v0
