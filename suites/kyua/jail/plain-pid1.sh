#!/bin/sh
# A plain program in a jail: PID 1 of its namespace is this program (or what started it).
if [ "$$" != 1 ]; then
    case $(tr '\0' ' ' < /proc/1/cmdline) in
    *plain-pid1.sh*) ;;
    *) echo "plain-pid1.sh: PID 1 is '$(tr '\0' ' ' < /proc/1/cmdline)'" >&2; exit 1 ;;
    esac
fi
exit 0
