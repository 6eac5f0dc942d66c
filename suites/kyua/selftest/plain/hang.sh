#!/bin/sh
# Broken: sleeps far past its two-second timeout.
sleep 600
exit 0
