#!/bin/sh
# The configuration reaches a plain program as Kyua passes it: its suite's variables and the
# unprivileged user, as TEST_ENV_ variables. Exits 1 naming the first one missing.
fail() {
    echo "config.sh: $*" >&2
    exit 1
}
[ "${TEST_ENV_lab_greeting-}" = hello ] || fail "TEST_ENV_lab_greeting is '${TEST_ENV_lab_greeting-unset}'"
# The user as atf spells it (Kyua 0.13 passes this one; 0.14.1 adds TEST_ENV_unprivileged_user).
user=$(tr '\0' '\n' </proc/$$/environ | sed -n 's/^TEST_ENV_unprivileged-user=//p')
[ "$user" = nobody ] || fail "TEST_ENV_unprivileged-user is '$user'"
exit 0
