#!/usr/bin/atf-sh
# Jails with their own network (execenv_jail_params = 'vnet'): only lo, and it is up; two
# cases that hold the same TCP port at the same time both succeed. Lab only.

port=7777

# hold_port CASE: listens on the port for about two seconds, then connects to itself over lo.
hold_port() {
    nc -l -p $port > /dev/null 2> nc.err &
    listener=$!
    sleep 1
    if ! kill -0 $listener 2>/dev/null; then
        atf_fail "cannot listen on port $port: $(cat nc.err)"
    fi
    sleep 1
    if ! kill -0 $listener 2>/dev/null; then
        atf_fail "the listener on port $port died: $(cat nc.err)"
    fi
    if ! echo "$1" | timeout 5 nc 127.0.0.1 $port; then
        kill $listener 2>/dev/null
        atf_fail "cannot connect to port $port over lo"
    fi
    kill $listener 2>/dev/null
    wait $listener 2>/dev/null
    return 0
}

atf_test_case bind_a
bind_a_head() {
    atf_set descr "holds TCP port 7777 for two seconds while bind_b holds it too"
    atf_set require.progs "nc timeout"
}
bind_a_body() {
    hold_port bind_a
}

atf_test_case bind_b
bind_b_head() {
    atf_set descr "holds TCP port 7777 for two seconds while bind_a holds it too"
    atf_set require.progs "nc timeout"
}
bind_b_body() {
    hold_port bind_b
}

atf_test_case only_lo
only_lo_head() {
    atf_set descr "the jail's network has lo up and no other device up"
}
only_lo_body() {
    # Built-in tunnel drivers add their fallback devices (sit0, tunl0, ...) to every network
    # namespace, always down: only what is up counts.
    atf_check -o inline:"lo\n" sh -c "ip -o link show | awk -F': ' '\$3 ~ /[<,]UP[,>]/ { print \$2 }'"
    atf_check -o match:'[<,]UP[,>]' ip -o link show lo
}

atf_init_test_cases() {
    atf_add_test_case bind_a
    atf_add_test_case bind_b
    atf_add_test_case only_lo
}
