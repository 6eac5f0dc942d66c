#!/bin/sh
# A plain test program that passes: exit status 0.
echo "plain program ran in $(pwd)"
exit 0
