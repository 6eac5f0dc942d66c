#!/bin/sh
# required_kmods='sch_ingress dummy': both loaded, in one go.
for m in sch_ingress dummy; do
    grep -q "^$m " /proc/modules || { echo "$m is not loaded"; exit 1; }
done
ip link add lab_d0 type dummy || exit 1
ip link del lab_d0
