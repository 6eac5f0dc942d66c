#!/bin/sh
# Allowed only on the vax: the runner skips it. Fails if it runs anyway.
echo "wrong-arch.sh ran on a non-vax" >&2
exit 1
