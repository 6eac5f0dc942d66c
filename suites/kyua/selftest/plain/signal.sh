#!/bin/sh
# Fails: kills itself with SIGKILL.
kill -9 $$
sleep 5
exit 0
