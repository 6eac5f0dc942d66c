// SPDX-License-Identifier: Apache-2.0
/*
 * Cilium-style tests of a policy that user space fills: port_policy (a BTF hash map, pinned
 * by name as Cilium's maps are) holds a verdict per destination port, written by the
 * Kyuafile's maps_setup program (port_policy_setup.c) after the object is loaded and before
 * its tests run. The setup's tail call reaches the policy through a static slot.
 */
#include <bpf/api.h>
#include <tests/common.h>

#define POLICY_DENY 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, __u32);
	__uint(max_entries, 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_policy __section(".maps");

static __always_inline int build_udp(struct xdp_md *ctx, __u16 port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);

	if ((void *)(udp + 1) > data_end)
		return XDP_ABORTED;
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->ihl_version = 0x45;
	ip->protocol = IPPROTO_UDP;
	udp->dest = bpf_htons(port);
	return XDP_PASS;
}

__section("xdp")
int port_policy_entry(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	__u16 port;
	__u32 *verdict;

	if ((void *)(udp + 1) > data_end)
		return XDP_ABORTED;
	port = bpf_ntohs(udp->dest);
	verdict = map_lookup_elem(&port_policy, &port);
	return verdict && *verdict == POLICY_DENY ? XDP_DROP : XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 1);
	__array(values, int());
} policy_calls __section(".maps") = {
	.values = {
		[0] = &port_policy_entry,
	},
};

static __always_inline int status_check(struct xdp_md *ctx, __u32 want)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;

	if ((void *)(status + 1) > data_end)
		return TEST_ERROR;
	return *status == want ? TEST_PASS : TEST_FAIL;
}

PKTGEN("xdp", "denied_port_drops")
int denied_pktgen(struct xdp_md *ctx)
{
	return build_udp(ctx, 53);
}

SETUP("xdp", "denied_port_drops")
int denied_setup(struct xdp_md *ctx)
{
	tail_call_static(ctx, policy_calls, 0);
	return XDP_ABORTED;
}

CHECK("xdp", "denied_port_drops")
int denied_check(struct xdp_md *ctx)
{
	return status_check(ctx, XDP_DROP);
}

PKTGEN("xdp", "unlisted_port_passes")
int unlisted_pktgen(struct xdp_md *ctx)
{
	return build_udp(ctx, 443);
}

SETUP("xdp", "unlisted_port_passes")
int unlisted_setup(struct xdp_md *ctx)
{
	tail_call_static(ctx, policy_calls, 0);
	return XDP_ABORTED;
}

CHECK("xdp", "unlisted_port_passes")
int unlisted_check(struct xdp_md *ctx)
{
	return status_check(ctx, XDP_PASS);
}

char _license[] __section("license") = "GPL";
