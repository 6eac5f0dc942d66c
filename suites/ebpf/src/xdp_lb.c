/* SPDX-License-Identifier: GPL-2.0 */
/* A UDP load balancer at XDP: packets for the VIP 10.0.0.100:53 go to one of the configured
 * backends, chosen at random; the destination address, port and MAC are rewritten (checksums
 * updated incrementally) and the packet is redirected to the backend's interface. Anything
 * else passes. Backends are configured by user space in lb_backends/lb_backend_count. */
#include "net.h"

#define LB_VIP		 0x0a000064 /* 10.0.0.100, host order */
#define LB_VIP_PORT	 53
#define LB_MAX_BACKENDS	 4

struct lb_backend {
	__be32 addr;
	__be16 port;
	__u8 mac[6];
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, LB_MAX_BACKENDS);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} lb_backend_count SEC(".maps");

static __always_inline int xdp_lb_handle(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = data + sizeof(*eth) + sizeof(*ip);
	struct lb_backend *be;
	__u32 zero = 0, *count, idx;
	__be32 old_addr;
	__be16 old_port;

	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (ip->daddr != bpf_htonl(LB_VIP) || udp->dest != bpf_htons(LB_VIP_PORT))
		return XDP_PASS;

	count = bpf_map_lookup_elem(&lb_backend_count, &zero);
	if (!count || *count == 0 || *count > LB_MAX_BACKENDS)
		return XDP_DROP; /* a VIP without backends */
	idx = bpf_get_prandom_u32() % *count;
	be = bpf_map_lookup_elem(&lb_backends, &idx);
	if (!be)
		return XDP_ABORTED;

	old_addr = ip->daddr;
	old_port = udp->dest;
	ip->daddr = be->addr;
	ip->check = net_csum_replace4(ip->check, old_addr, be->addr);
	udp->dest = be->port;
	if (udp->check) {
		__u16 c = net_csum_replace4(udp->check, old_addr, be->addr);

		c = net_csum_replace2(c, old_port, be->port);
		udp->check = c ? c : 0xffff;
	}
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	return bpf_redirect(be->ifindex, 0);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	return xdp_lb_handle(ctx);
}
