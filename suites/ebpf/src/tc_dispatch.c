/* SPDX-License-Identifier: GPL-2.0 */
/* A tc classifier that dispatches IPv4 packets by protocol through the prog array
 * dispatch_calls: slot DISPATCH_UDP marks UDP packets Expedited Forwarding (DSCP 46), slot
 * DISPATCH_TCP drops telnet, slot DISPATCH_ICMP is for an optional ICMP handler. User space
 * fills dispatch_calls with dispatch_udp and dispatch_tcp (and an ICMP handler where it has
 * one). With a slot empty the tail call falls through: the packet passes and
 * dispatch_stats[STAT_MISS] counts it, so a missing handler shows. The handlers' logic lives
 * in static functions, so a test can put thin wrappers of its own into the slots (lab's
 * TAIL_CALL convention; see tests/tc_dispatch_test.c). */
#include "net.h"

#define DISPATCH_UDP  0
#define DISPATCH_TCP  1
#define DISPATCH_ICMP 2
#define DISPATCH_MAX  4

#define STAT_UDP   0
#define STAT_TCP   1
#define STAT_MISS  2
#define STAT_OTHER 3
#define STAT_MAX   4

#define DSCP_EF	   46

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} dispatch_stats SEC(".maps");

/* Filled by user space (no static .values: aya-obj, and so lab, cannot parse them). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, DISPATCH_MAX);
} dispatch_calls SEC(".maps");

static __always_inline void dispatch_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&dispatch_stats, &stat);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Slot DISPATCH_UDP: remarks the packet EF, fixing the IPv4 checksum. */
static __always_inline int handle_udp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u16 old, new;

	dispatch_count(STAT_UDP);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	old = *(__u16 *)ip; /* version, ihl and tos */
	ip->tos = (DSCP_EF << 2) | (ip->tos & 3);
	new = *(__u16 *)ip;
	ip->check = net_csum_replace2(ip->check, old, new);
	return TC_ACT_OK;
}

/* Slot DISPATCH_TCP: drops telnet. */
static __always_inline int handle_tcp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);

	dispatch_count(STAT_TCP);
	if ((void *)(tcp + 1) > data_end || ip->ihl != 5)
		return TC_ACT_OK;
	return tcp->dest == bpf_htons(23) ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int dispatch_udp(struct __sk_buff *skb)
{
	return handle_udp(skb);
}

SEC("tc")
int dispatch_tcp(struct __sk_buff *skb)
{
	return handle_tcp(skb);
}

static __always_inline int dispatch(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 slot;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) {
		dispatch_count(STAT_OTHER);
		return TC_ACT_OK;
	}
	if (ip->protocol == IPPROTO_UDP)
		slot = DISPATCH_UDP;
	else if (ip->protocol == IPPROTO_TCP)
		slot = DISPATCH_TCP;
	else if (ip->protocol == IPPROTO_ICMP)
		slot = DISPATCH_ICMP;
	else {
		dispatch_count(STAT_OTHER);
		return TC_ACT_OK;
	}
	bpf_tail_call(skb, &dispatch_calls, slot);
	dispatch_count(STAT_MISS);
	return TC_ACT_OK;
}

SEC("tc")
int tc_dispatch(struct __sk_buff *skb)
{
	return dispatch(skb);
}
