#!/bin/sh
# A fresh VM served no case before this one: the lab's work and result directories hold only
# this case's entries, and the guest has been up for a short time only.
set -eu
works=$(ls /tmp/lab-work | wc -l)
results=$(ls /tmp/lab-results | wc -l)
if [ "$works" -ne 1 ] || [ "$results" -ne 0 ]; then
    echo "not a fresh VM: $works work directories, $results result files" >&2
    exit 1
fi
