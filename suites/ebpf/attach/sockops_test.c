/* SPDX-License-Identifier: GPL-2.0 */
/* A sockops program (sockops.bpf.c) attached to a cgroup, driven by real TCP connections on
 * 127.0.0.1 and [::1]: it counts each connect and each established connection, active and
 * passive, and records the ports of each; a refused connect counts as a connect only. Prints
 * TAP 14. */
#include "attach_test.h"

#define CLIENTS 3

static int counters_fd, ports_fd;

static unsigned long long counter(__u32 which)
{
	return at_counter(counters_fd, which);
}

/* The op recorded for (LOCAL, REMOTE), or ~0 when none. */
static __u32 recorded(__u16 local, __u16 remote)
{
	__u32 key = SOCKOPS_PORTS_KEY(local, remote);
	__u32 op;

	return bpf_map_lookup_elem(ports_fd, &key, &op) == 0 ? op : ~0u;
}

int main(void)
{
	int listener4, listener6, closed, clients[CLIENTS + 1], peers[CLIENTS + 1];
	__u16 port4, port6, closed_port, cport;
	union at_addr to;
	int connected = 0, all_recorded = 1, late, err;

	at_start("sockops");
	at_open("sockops");
	counters_fd = at_map("sockops_counters");
	ports_fd = at_map("sock_ports");
	at_attach("count_established");
	at_enter();

	listener4 = at_server(AF_INET, SOCK_STREAM, 0);
	listener6 = at_server(AF_INET6, SOCK_STREAM, 0);
	port4 = at_local_port(listener4);
	port6 = at_local_port(listener6);
	/* A port where nothing listens: bind without listening. */
	closed = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	to = at_addr(AF_INET, INADDR_LOOPBACK, 0);
	if (closed < 0 || bind(closed, &to.sa, at_len(&to)) != 0)
		at_bail("cannot reserve a closed port: %s", strerror(errno));
	closed_port = at_local_port(closed);

	/* CLIENTS connections over IPv4, one over IPv6. */
	for (int i = 0; i <= CLIENTS; i++) {
		int v6 = i == CLIENTS;

		to = at_addr(v6 ? AF_INET6 : AF_INET, INADDR_LOOPBACK, v6 ? port6 : port4);
		clients[i] = at_connect(SOCK_STREAM, &to, AT_SOON_MS);
		peers[i] = clients[i] >= 0 ? at_accept(v6 ? listener6 : listener4, AT_SOON_MS) : -1;
		connected += clients[i] >= 0 && peers[i] >= 0;
	}
	at_ok(connected == CLIENTS + 1, "%d of %d connections established", connected,
	      CLIENTS + 1);

	to = at_addr(AF_INET, INADDR_LOOPBACK, closed_port);
	err = at_connect(SOCK_STREAM, &to, AT_SOON_MS) < 0 ? errno : 0;
	at_ok(err == ECONNREFUSED, "a connect to closed port %u is refused (%s)", closed_port,
	      at_errname(err));

	at_ok(counter(SOCKOPS_ACTIVE_ESTABLISHED) == CLIENTS + 1,
	      "%d active establishments counted: %llu", CLIENTS + 1,
	      counter(SOCKOPS_ACTIVE_ESTABLISHED));
	at_ok(counter(SOCKOPS_PASSIVE_ESTABLISHED) == CLIENTS + 1,
	      "%d passive establishments counted: %llu", CLIENTS + 1,
	      counter(SOCKOPS_PASSIVE_ESTABLISHED));
	at_ok(counter(SOCKOPS_TCP_CONNECT) == CLIENTS + 2,
	      "%d connects counted, the refused one included: %llu", CLIENTS + 2,
	      counter(SOCKOPS_TCP_CONNECT));

	for (int i = 0; i <= CLIENTS; i++) {
		__u16 server = i == CLIENTS ? port6 : port4;

		cport = clients[i] >= 0 ? at_local_port(clients[i]) : 0;
		if (recorded(cport, server) != SOCKOPS_ACTIVE_ESTABLISHED ||
		    recorded(server, cport) != SOCKOPS_PASSIVE_ESTABLISHED) {
			all_recorded = 0;
			at_diag("connection %d (%u -> %u): recorded %#x and %#x", i, cport, server,
				recorded(cport, server), recorded(server, cport));
		}
	}
	at_ok(all_recorded, "each connection's ports are recorded, active and passive");

	/* Detached: a new connection is not counted. */
	at_detach();
	to = at_addr(AF_INET, INADDR_LOOPBACK, port4);
	late = at_connect(SOCK_STREAM, &to, AT_SOON_MS);
	err = late < 0 ? errno : 0;
	at_ok(err == 0 && counter(SOCKOPS_ACTIVE_ESTABLISHED) == CLIENTS + 1,
	      "detached: a new connection (%s) is not counted", at_errname(err));
	if (late >= 0)
		close(late);
	for (int i = 0; i <= CLIENTS; i++) {
		if (clients[i] >= 0)
			close(clients[i]);
		if (peers[i] >= 0)
			close(peers[i]);
	}
	close(closed);
	close(listener4);
	close(listener6);
	return at_finish();
}
