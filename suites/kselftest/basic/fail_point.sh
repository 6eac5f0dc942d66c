#!/bin/sh
# Three test points, the second fails on purpose; exits 1 (KSFT_FAIL) as ksft_finished() does.
echo "TAP version 13"
echo "1..3"
echo "ok 1 first check"
echo "# second check: expected 2 but got 3"
echo "not ok 2 second check"
echo "ok 3 third check"
echo "# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0"
exit 1
