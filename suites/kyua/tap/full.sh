#!/bin/sh
# TAP 14 with everything a passing program may hold: the version line, a plan, ok points, a
# '# SKIP' point, a '# TODO' point that is not ok, a YAML diagnostic block, a subtest and
# comments. The program as a whole passes.
cat <<'EOF'
TAP version 14
1..5
# plain comment lines are ignored
ok 1 - arithmetic works
ok 2 - runs only on a vax # SKIP not on a vax
not ok 3 - known bug in the widget # TODO fix the widget
  ---
  message: "widget returned 2"
  severity: todo
  data:
    got: 2
    expect: 3
  ...
# Subtest: nested checks
    1..2
    ok 1 - inner first
    ok 2 - inner second
ok 4 - nested checks
ok 5 - last point
EOF
exit 0
