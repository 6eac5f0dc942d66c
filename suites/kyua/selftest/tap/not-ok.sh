#!/bin/sh
# Fails: one test point is not ok (and has no directive).
cat <<'EOF'
TAP version 14
1..3
ok 1 - first
not ok 2 - second breaks
  ---
  message: "on purpose"
  ...
ok 3 - third
EOF
exit 0
