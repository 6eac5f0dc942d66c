/* SPDX-License-Identifier: GPL-2.0 */
/* cgroup_skb egress and ingress programs (cgroup_skb.bpf.c) attached to a cgroup and judged
 * by real traffic on 127.0.0.1: sends to a port denied on egress fail, connects to one never
 * complete; datagrams and connects to a port denied on ingress never arrive; allowed ports
 * work; once detached, the denied ports work too. Prints TAP 14. */
#include "attach_test.h"

#define UDP_ALLOWED 17001
#define UDP_DENY_OUT 17002
#define UDP_DENY_IN 17003
#define TCP_ALLOWED 17011
#define TCP_DENY_OUT 17012
#define TCP_DENY_IN 17013

static int counters_fd;

static unsigned long long counter(__u32 which)
{
	return at_counter(counters_fd, which);
}

static void deny(int map_fd, __u16 port)
{
	__u8 yes = 1;

	if (bpf_map_update_elem(map_fd, &port, &yes, BPF_ANY) != 0)
		at_bail("cannot deny port %u: %s", port, strerror(errno));
}

/* Sends a datagram from CLIENT to loopback:PORT; errno or 0. */
static int send_to(int client, __u16 port)
{
	union at_addr to = at_addr(AF_INET, INADDR_LOOPBACK, port);

	return sendto(client, "datagram", 8, 0, &to.sa, at_len(&to)) == 8 ? 0 : errno;
}

/* Whether RECEIVER gets a datagram within MS. */
static int arrives(int receiver, int ms)
{
	union at_addr from;
	char buf[32];

	return at_recv(receiver, buf, sizeof(buf), &from, ms) == 8;
}

/* Connects to LISTENER's port within MS; whether it was accepted; *ERR the connect's errno. */
static int connects(int listener, int ms, int *err)
{
	union at_addr to = at_addr(AF_INET, INADDR_LOOPBACK, at_local_port(listener));
	int fd = at_connect(SOCK_STREAM, &to, ms);
	int peer;

	*err = fd < 0 ? errno : 0;
	if (fd < 0)
		return 0;
	peer = at_accept(listener, ms);
	close(fd);
	if (peer < 0)
		return 0;
	close(peer);
	return 1;
}

int main(void)
{
	int udp_allowed, udp_deny_out, udp_deny_in, tcp_allowed, tcp_deny_out, tcp_deny_in;
	int client, err, ok;

	at_start("cgroup_skb");
	at_open("cgroup_skb");
	counters_fd = at_map("skb_counters");
	deny(at_map("deny_egress"), UDP_DENY_OUT);
	deny(at_map("deny_egress"), TCP_DENY_OUT);
	deny(at_map("deny_ingress"), UDP_DENY_IN);
	deny(at_map("deny_ingress"), TCP_DENY_IN);
	at_attach("skb_egress");
	at_attach("skb_ingress");
	at_enter();

	udp_allowed = at_server(AF_INET, SOCK_DGRAM, UDP_ALLOWED);
	udp_deny_out = at_server(AF_INET, SOCK_DGRAM, UDP_DENY_OUT);
	udp_deny_in = at_server(AF_INET, SOCK_DGRAM, UDP_DENY_IN);
	tcp_allowed = at_server(AF_INET, SOCK_STREAM, TCP_ALLOWED);
	tcp_deny_out = at_server(AF_INET, SOCK_STREAM, TCP_DENY_OUT);
	tcp_deny_in = at_server(AF_INET, SOCK_STREAM, TCP_DENY_IN);
	client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (client < 0)
		at_bail("socket: %s", strerror(errno));

	err = send_to(client, UDP_ALLOWED);
	at_ok(err == 0 && arrives(udp_allowed, AT_SOON_MS),
	      "UDP to allowed port %u is sent and arrives (%s)", UDP_ALLOWED,
	      err ? strerror(err) : "sent");
	err = send_to(client, UDP_DENY_OUT);
	at_ok(err == EPERM, "UDP to egress-denied port %u fails to send: %s", UDP_DENY_OUT,
	      err ? strerror(err) : "sent");
	at_ok(!arrives(udp_deny_out, AT_NEVER_MS), "and nothing arrives there");
	err = send_to(client, UDP_DENY_IN);
	at_ok(err == 0 && !arrives(udp_deny_in, AT_NEVER_MS),
	      "UDP to ingress-denied port %u is sent but never arrives (%s)", UDP_DENY_IN,
	      err ? strerror(err) : "sent");

	ok = connects(tcp_allowed, AT_SOON_MS, &err);
	at_ok(ok, "TCP to allowed port %u connects (%s)", TCP_ALLOWED, at_errname(err));
	ok = connects(tcp_deny_out, AT_NEVER_MS, &err);
	at_ok(!ok, "TCP to egress-denied port %u does not connect (%s)", TCP_DENY_OUT,
	      at_errname(err));
	ok = connects(tcp_deny_in, AT_NEVER_MS, &err);
	at_ok(!ok, "TCP to ingress-denied port %u does not connect (%s)", TCP_DENY_IN,
	      at_errname(err));

	at_ok(counter(SKB_EGRESS_DROPPED) >= 2 && counter(SKB_INGRESS_DROPPED) >= 2,
	      "the programs counted the drops (egress %llu of %llu, ingress %llu of %llu)",
	      counter(SKB_EGRESS_DROPPED), counter(SKB_EGRESS_SEEN), counter(SKB_INGRESS_DROPPED),
	      counter(SKB_INGRESS_SEEN));

	/* Detached: the same sockets, and everything goes through. */
	at_detach();
	err = send_to(client, UDP_DENY_OUT);
	at_ok(err == 0 && arrives(udp_deny_out, AT_SOON_MS),
	      "detached: UDP to port %u arrives (%s)", UDP_DENY_OUT, err ? strerror(err) : "sent");
	ok = connects(tcp_deny_in, AT_SOON_MS, &err);
	at_ok(ok, "detached: TCP to port %u connects (%s)", TCP_DENY_IN, at_errname(err));

	close(client);
	close(udp_allowed);
	close(udp_deny_out);
	close(udp_deny_in);
	close(tcp_allowed);
	close(tcp_deny_out);
	close(tcp_deny_in);
	return at_finish();
}
