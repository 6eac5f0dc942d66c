#!/bin/sh
# Kyua's conventions for plain programs: a fresh, empty work directory that is also HOME and
# TMPDIR, TZ=UTC, LANG and LC_ALL unset, umask 0022. Exits 1 naming the first convention broken.
here=$(pwd -P)
fail() {
    echo "environment.sh: $*" >&2
    exit 1
}
[ -z "$(ls -A)" ] || fail "work directory is not empty"
[ "$(cd "$HOME" && pwd -P)" = "$here" ] || fail "HOME is '$HOME', not $here"
[ "$(cd "$TMPDIR" && pwd -P)" = "$here" ] || fail "TMPDIR is '$TMPDIR', not $here"
[ "$TZ" = UTC ] || fail "TZ is '${TZ-unset}'"
[ -z "${LANG+set}" ] || fail "LANG is set ('$LANG'); Kyua unsets it"
[ -z "${LC_ALL+set}" ] || fail "LC_ALL is set ('$LC_ALL'); Kyua unsets it"
[ "$(umask)" = 0022 ] || fail "umask is $(umask), not 0022"
touch scratch || fail "work directory is not writable"
exit 0
