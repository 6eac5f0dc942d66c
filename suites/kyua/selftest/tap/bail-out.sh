#!/bin/sh
# Bails out after the first test point.
printf 'TAP version 14\n1..3\nok 1 - one\nBail out! the database is gone\n'
exit 0
