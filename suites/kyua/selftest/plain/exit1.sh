#!/bin/sh
# Fails: exit status 1.
echo "exit1.sh: failing on purpose" >&2
exit 1
