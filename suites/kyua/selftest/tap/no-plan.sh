#!/bin/sh
# Prints test points but never a plan.
printf 'TAP version 14\nok 1 - one\nok 2 - two\n'
exit 0
