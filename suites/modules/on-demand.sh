#!/bin/sh
# Modules nobody asked for in advance: the kernel's request_module runs the guest's modprobe,
# which fetches them from lab. TAP 14.
echo "TAP version 14"
echo "1..3"
if grep -q '^ifb ' /proc/modules; then
    echo "not ok 1 - ifb not loaded before the test"
else
    echo "ok 1 - ifb not loaded before the test"
fi
if ip link add lab_ifb0 type ifb 2>/dev/null && grep -q '^ifb ' /proc/modules; then
    echo "ok 2 - ip link add type ifb loads ifb on demand"
    ip link del lab_ifb0
else
    echo "not ok 2 - ip link add type ifb loads ifb on demand"
fi
if modprobe -q lab_no_such_module; then
    echo "not ok 3 - modprobe of a missing module fails"
else
    echo "ok 3 - modprobe of a missing module fails"
fi
