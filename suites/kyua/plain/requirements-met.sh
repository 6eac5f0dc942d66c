#!/bin/sh
# Every requirement the Kyuafile sets is met here, so this runs and passes.
[ -f /etc/passwd ] || exit 1
echo 1234567890 > file || exit 1
exit 0
