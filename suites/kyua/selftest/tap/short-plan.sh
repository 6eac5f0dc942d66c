#!/bin/sh
# Plans three test points and runs two.
printf 'TAP version 14\n1..3\nok 1 - one\nok 2 - two\n'
exit 0
