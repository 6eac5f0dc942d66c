#!/bin/sh
# Requires a program that does not exist: the runner skips it. Fails if it runs anyway.
echo "needs-missing.sh ran although lab-no-such-program is missing" >&2
exit 1
