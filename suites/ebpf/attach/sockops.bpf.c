/* SPDX-License-Identifier: GPL-2.0 */
/* A sockops program that counts TCP connects and established connections (active: ours,
 * passive: accepted) and records each established one in sock_ports under
 * (local port << 16) | remote port, as Kmesh's sockops records managed connections. The test
 * is attach/sockops_test.c. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "attach_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SOCKOPS_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} sockops_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} sock_ports SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&sockops_counters, &which);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* remote_port holds the port in network order; the kernel widens it to 32 bits by shifting
 * it into the upper half on little-endian machines, so either half may carry it. */
static __always_inline __u16 remote_port(const struct bpf_sock_ops *skops)
{
	__u32 rp = skops->remote_port;

	return rp > 0xffff ? (__u16)bpf_ntohl(rp) : bpf_ntohs((__u16)rp);
}

static __always_inline void record(struct bpf_sock_ops *skops, __u32 which)
{
	__u32 key = SOCKOPS_PORTS_KEY(skops->local_port, remote_port(skops));

	count(which);
	bpf_map_update_elem(&sock_ports, &key, &which, BPF_ANY);
}

SEC("sockops")
int count_established(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		count(SOCKOPS_TCP_CONNECT);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		record(skops, SOCKOPS_ACTIVE_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		record(skops, SOCKOPS_PASSIVE_ESTABLISHED);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
