#!/bin/sh
# A TAP program that skips everything: the plan 1..0 with a SKIP directive.
echo "TAP version 14"
echo "1..0 # SKIP nothing to test here"
exit 0
