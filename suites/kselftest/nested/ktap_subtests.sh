#!/bin/sh
# KTAP with nested subtests, as KUnit prints it: each suite indented by four spaces with its
# own version line, "# Subtest:" and plan, its counts before its result line; one parameterised
# case nests once more (without a plan, as KUnit's have none). Exits 0.
cat <<'KTAP'
KTAP version 1
1..2
    KTAP version 1
    # Subtest: strings
    1..3
    # strings_upper: initializing
    ok 1 strings_upper
    ok 2 strings_lower
        KTAP version 1
        # Subtest: strings_param
        ok 1 empty
        ok 2 ascii
        ok 3 utf8 # SKIP no locale
    # strings_param: pass:2 fail:0 skip:1 total:3
    ok 3 strings_param
# strings: pass:3 fail:0 skip:0 total:3
ok 1 strings
    KTAP version 1
    # Subtest: numbers
    1..2
    ok 1 numbers_add
    ok 2 numbers_overflow # SKIP not on this architecture
# numbers: pass:1 fail:0 skip:1 total:2
ok 2 numbers
# Totals: pass:5 fail:0 skip:2 total:7
KTAP
exit 0
