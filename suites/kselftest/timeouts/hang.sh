#!/bin/sh
# Reports one point, then hangs far past its collection's timeout (timeouts/settings:
# timeout=5): kselftest/runner.sh's timeout(1) kills it, and the runner reports TIMEOUT.
echo "TAP version 13"
echo "1..2"
echo "ok 1 started"
sleep 60
echo "ok 2 never reached"
exit 0
