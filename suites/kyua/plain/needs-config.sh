#!/bin/sh
# Requires a configuration variable nobody sets: the runner skips it. Fails if it runs anyway.
echo "needs-config.sh ran without lab_never_set" >&2
exit 1
