#!/bin/sh
# Claims to be an atf program but cannot list its cases: exits 1 whatever it is asked.
echo "unlistable.sh: cannot list test cases (on purpose)" >&2
exit 1
