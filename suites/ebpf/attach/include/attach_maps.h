/* SPDX-License-Identifier: GPL-2.0 */
/* What the attach tests' eBPF programs and their user-space test programs share: map value
 * layouts, counter indices and the addresses they agree on. Included by both sides, so only
 * <linux/types.h> types. Ports and IPv4 addresses are in host order unless named _be. */
#pragma once

#include <linux/types.h>

/* connect.bpf.c: km_manage registration and a redirect for managed netns. */
struct km_config {
	__u16 reg_port;     /* connect to loopback:reg_port registers the netns */
	__u16 dereg_port;   /* connect to loopback:dereg_port deregisters it */
	__u16 svc_port;     /* the "service" port */
	__u16 backend_port; /* where connects to the service go, on loopback */
	__u32 svc_ip4;      /* the IPv4 "service" address (IPv6: ::1 with svc_port) */
};

/* km_manage's value: which socket registered the netns. */
struct km_entry {
	__u32 family; /* AF_INET or AF_INET6 */
	__u32 type;   /* SOCK_STREAM or SOCK_DGRAM */
};

enum km_counter {
	KM_REGISTERED,
	KM_DEREGISTERED,
	KM_REDIRECTED4,
	KM_REDIRECTED6,
	KM_COUNTERS,
};

/* udp_msg.bpf.c: a UDP service address served by a loopback backend. */
struct udp_svc_config {
	__u32 svc_ip4;
	__u16 svc_port;
	__u16 backend_port; /* on 127.0.0.1 */
};

enum udp_counter {
	UDP_SENDMSG_SEEN,
	UDP_SENDMSG_REWRITTEN,
	UDP_RECVMSG_SEEN,
	UDP_RECVMSG_REWRITTEN,
	UDP_COUNTERS,
};

/* cgroup_skb.bpf.c: IPv4 TCP/UDP destination ports denied per direction (maps keyed by the
 * port, value ignored), and what the programs saw. */
enum skb_counter {
	SKB_EGRESS_SEEN,
	SKB_EGRESS_DROPPED,
	SKB_INGRESS_SEEN,
	SKB_INGRESS_DROPPED,
	SKB_COUNTERS,
};

/* sockops.bpf.c: callbacks counted by op, established connections recorded by ports. */
enum sockops_counter {
	SOCKOPS_TCP_CONNECT,       /* BPF_SOCK_OPS_TCP_CONNECT_CB */
	SOCKOPS_ACTIVE_ESTABLISHED,
	SOCKOPS_PASSIVE_ESTABLISHED,
	SOCKOPS_COUNTERS,
};

/* sock_ports' key: (local port << 16) | remote port; value: the establishing op's counter. */
#define SOCKOPS_PORTS_KEY(local, remote) (((__u32)(local) << 16) | (__u32)(remote))
