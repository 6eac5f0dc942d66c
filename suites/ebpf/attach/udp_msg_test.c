/* SPDX-License-Identifier: GPL-2.0 */
/* cgroup/sendmsg4 and cgroup/recvmsg4 (udp_msg.bpf.c) attached to a cgroup and driven by UDP
 * over loopback: a datagram sent to the service address 127.100.0.1:5353, where nothing
 * listens, is delivered to the backend on 127.0.0.1, and the backend's answer is received as
 * coming from the service. Prints TAP 14. */
#include "attach_test.h"

#define SVC_IP4 0x7f640001 /* 127.100.0.1 */
#define SVC_PORT 5353

static int counters_fd;

static unsigned long long counter(__u32 which)
{
	return at_counter(counters_fd, which);
}

static const char *addr_text(const union at_addr *a, char *buf, size_t size)
{
	char ip[INET_ADDRSTRLEN] = "?";

	inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof(ip));
	snprintf(buf, size, "%s:%u", ip, at_port_of(a));
	return buf;
}

int main(void)
{
	struct udp_svc_config cfg = { .svc_ip4 = SVC_IP4, .svc_port = SVC_PORT };
	union at_addr svc = at_addr(AF_INET, SVC_IP4, SVC_PORT);
	union at_addr from, other_addr;
	char buf[64], text[64];
	__u32 zero = 0;
	int client, backend, other, ok;
	ssize_t n;

	at_start("udp_msg");
	at_open("udp_msg");
	counters_fd = at_map("udp_counters");
	at_attach("udp_sendmsg4");
	at_attach("udp_recvmsg4");
	at_enter();

	backend = at_server(AF_INET, SOCK_DGRAM, 0);
	other = at_server(AF_INET, SOCK_DGRAM, 0);
	client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (client < 0)
		at_bail("socket: %s", strerror(errno));
	cfg.backend_port = at_local_port(backend);
	if (bpf_map_update_elem(at_map("udp_svc"), &zero, &cfg, BPF_ANY) != 0)
		at_bail("cannot configure udp_svc: %s", strerror(errno));
	at_diag("backend 127.0.0.1:%u", cfg.backend_port);

	/* The query goes to the service and arrives at the backend. */
	n = sendto(client, "query", 5, 0, &svc.sa, at_len(&svc));
	at_ok(n == 5, "sendto 127.100.0.1:%u: %s", SVC_PORT, n == 5 ? "sent" : strerror(errno));
	n = at_recv(backend, buf, sizeof(buf), &from, AT_SOON_MS);
	ok = n == 5 && strcmp(buf, "query") == 0;
	at_ok(ok, "the backend received the query (%zd bytes)", n);
	at_ok(ok && at_port_of(&from) == at_local_port(client),
	      "from the client's own address %s", addr_text(&from, text, sizeof(text)));

	/* The answer comes from the backend, and the client sees it come from the service. */
	n = sendto(backend, "answer", 6, 0, &from.sa, at_len(&from));
	at_ok(n == 6, "the backend answers: %s", n == 6 ? "sent" : strerror(errno));
	n = at_recv(client, buf, sizeof(buf), &from, AT_SOON_MS);
	ok = n == 6 && strcmp(buf, "answer") == 0;
	at_ok(ok, "the client received the answer (%zd bytes)", n);
	at_ok(ok && from.in4.sin_addr.s_addr == htonl(SVC_IP4) && at_port_of(&from) == SVC_PORT,
	      "from the service address, not the backend's: %s",
	      addr_text(&from, text, sizeof(text)));

	/* Other destinations are left alone. */
	other_addr = at_addr(AF_INET, INADDR_LOOPBACK, at_local_port(other));
	n = sendto(client, "direct", 6, 0, &other_addr.sa, at_len(&other_addr));
	n = n == 6 ? at_recv(other, buf, sizeof(buf), &from, AT_SOON_MS) : -1;
	at_ok(n == 6 && strcmp(buf, "direct") == 0,
	      "a datagram to another loopback port is delivered there unchanged");
	at_ok(at_recv(backend, buf, sizeof(buf), &from, AT_NEVER_MS) < 0,
	      "and not to the backend");
	at_ok(counter(UDP_SENDMSG_REWRITTEN) == 1 && counter(UDP_RECVMSG_REWRITTEN) == 1,
	      "one rewrite counted each way (sendmsg4 %llu of %llu, recvmsg4 %llu of %llu)",
	      counter(UDP_SENDMSG_REWRITTEN), counter(UDP_SENDMSG_SEEN),
	      counter(UDP_RECVMSG_REWRITTEN), counter(UDP_RECVMSG_SEEN));

	/* Detached: the service address is just an address where nothing listens. */
	at_detach();
	n = sendto(client, "query", 5, 0, &svc.sa, at_len(&svc));
	at_ok(n == 5 && at_recv(backend, buf, sizeof(buf), &from, AT_NEVER_MS) < 0,
	      "detached: a datagram to the service no longer reaches the backend");

	close(client);
	close(backend);
	close(other);
	return at_finish();
}
