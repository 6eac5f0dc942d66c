/* SPDX-License-Identifier: GPL-2.0 */
/* UDP socket load balancing on loopback, as Cilium's and Kmesh's sendmsg/recvmsg hooks do:
 * cgroup/sendmsg4 sends datagrams addressed to the service (svc_ip4:svc_port) to the backend
 * at 127.0.0.1:backend_port, and cgroup/recvmsg4 makes the backend's replies appear to come
 * from the service. The test is attach/udp_msg_test.c. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "attach_maps.h"

#define SOCK_OK 1
#define LOOPBACK4 0x7f000001

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct udp_svc_config);
} udp_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UDP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} udp_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&udp_counters, &which);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("cgroup/sendmsg4")
int udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct udp_svc_config *svc = bpf_map_lookup_elem(&udp_svc, &zero);

	count(UDP_SENDMSG_SEEN);
	if (!svc || ctx->type != 2 /* SOCK_DGRAM */)
		return SOCK_OK;
	if (bpf_ntohl(ctx->user_ip4) == svc->svc_ip4 &&
	    bpf_ntohs((__u16)ctx->user_port) == svc->svc_port) {
		ctx->user_ip4 = bpf_htonl(LOOPBACK4);
		ctx->user_port = bpf_htons(svc->backend_port);
		count(UDP_SENDMSG_REWRITTEN);
	}
	return SOCK_OK;
}

/* user_ip4/user_port hold the datagram's source here. */
SEC("cgroup/recvmsg4")
int udp_recvmsg4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct udp_svc_config *svc = bpf_map_lookup_elem(&udp_svc, &zero);

	count(UDP_RECVMSG_SEEN);
	if (!svc)
		return SOCK_OK;
	if (bpf_ntohl(ctx->user_ip4) == LOOPBACK4 &&
	    bpf_ntohs((__u16)ctx->user_port) == svc->backend_port) {
		ctx->user_ip4 = bpf_htonl(svc->svc_ip4);
		ctx->user_port = bpf_htons(svc->svc_port);
		count(UDP_RECVMSG_REWRITTEN);
	}
	return SOCK_OK;
}

char LICENSE[] SEC("license") = "GPL";
