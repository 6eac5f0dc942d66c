/* SPDX-License-Identifier: GPL-2.0 */
/* A port policy for a cgroup on real traffic: cgroup_skb/egress drops IPv4 TCP and UDP
 * packets whose destination port is in deny_egress, cgroup_skb/ingress those whose
 * destination port is in deny_ingress; both count what they saw and dropped. The packet
 * starts at the network header and is read with bpf_skb_load_bytes. The test is
 * attach/cgroup_skb_test.c. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "attach_maps.h"

#define SKB_DROP 0
#define SKB_PASS 1

struct ports {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u16); /* destination port, host order */
	__type(value, __u8);
};

struct ports deny_egress SEC(".maps");
struct ports deny_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SKB_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} skb_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&skb_counters, &which);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Whether the packet is IPv4 TCP/UDP to a port in DENY. */
static __always_inline int denied(struct __sk_buff *skb, void *deny)
{
	struct iphdr ip;
	__be16 ports[2];
	__u16 dport;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return 0;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, (ip.ihl & 0xf) * 4, ports, sizeof(ports)))
		return 0;
	dport = bpf_ntohs(ports[1]);
	return bpf_map_lookup_elem(deny, &dport) != 0;
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	count(SKB_EGRESS_SEEN);
	if (denied(skb, &deny_egress)) {
		count(SKB_EGRESS_DROPPED);
		return SKB_DROP;
	}
	return SKB_PASS;
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb)
{
	count(SKB_INGRESS_SEEN);
	if (denied(skb, &deny_ingress)) {
		count(SKB_INGRESS_DROPPED);
		return SKB_DROP;
	}
	return SKB_PASS;
}

char LICENSE[] SEC("license") = "GPL";
