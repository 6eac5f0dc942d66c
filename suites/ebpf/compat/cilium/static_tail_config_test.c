// SPDX-License-Identifier: Apache-2.0
/*
 * Cilium-style: an XDP entry program reached through a BTF prog array whose slot is set by a
 * static initialiser (bpf/tests/lib/bpf_xdp.h's entry_call_map), deciding by load-time
 * configuration in .rodata.config: UDP to CONFIG(drop_port) is dropped, UDP to
 * CONFIG_VAR(mark_port) is passed with a mark in the packet, the rest passes untouched.
 */
#include <bpf/api.h>
#include <bpf/config.h>
#include <tests/common.h>

ASSIGN_CONFIG(__u16, drop_port, 53)
ASSIGN_CONFIG(__u16, mark_port, 8080)

#define MARK_BYTE 0xab

static __always_inline struct udphdr *udp_of(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);

	if ((void *)(udp + 1) > data_end)
		return NULL;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
		return NULL;
	return udp;
}

__section("xdp/entry")
int cil_xdp_entry(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp = udp_of(data, data_end);
	__u16 drop = CONFIG(drop_port);

	if (!udp)
		return XDP_PASS;
	if (udp->dest == bpf_htons(drop))
		return XDP_DROP;
	if (udp->dest == bpf_htons(CONFIG_VAR(mark_port)))
		((struct ethhdr *)data)->h_dest[0] = MARK_BYTE;
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 1);
	__array(values, int());
} entry_call_map __section(".maps") = {
	.values = {
		[0] = &cil_xdp_entry,
	},
};

static __always_inline int build_udp(struct xdp_md *ctx, __u16 port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);

	if ((void *)(udp + 1) > data_end)
		return TEST_ERROR;
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->ihl_version = 0x45;
	ip->protocol = IPPROTO_UDP;
	ip->saddr = bpf_htonl(0x0a000001);
	ip->daddr = bpf_htonl(0x0a000002);
	udp->source = bpf_htons(40000);
	udp->dest = bpf_htons(port);
	return 0;
}

/* The entry program's verdict is what the setup's tail call returns. */
#define ENTRY_THROUGH_TAIL_CALL(ctx)                                             \
	do {                                                                     \
		tail_call_static(ctx, entry_call_map, 0);                        \
		return TEST_ERROR;                                               \
	} while (0)

PKTGEN("xdp", "config_drop_port")
int config_drop_port_pktgen(struct xdp_md *ctx)
{
	return build_udp(ctx, 53);
}

SETUP("xdp", "config_drop_port")
int config_drop_port_setup(struct xdp_md *ctx)
{
	ENTRY_THROUGH_TAIL_CALL(ctx);
}

CHECK("xdp", "config_drop_port")
int config_drop_port_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;

	test_init();
	if ((void *)(status + 1) > data_end)
		test_error();
	TEST("dropped", {
		assert(*status == XDP_DROP);
	});
	test_finish();
}

PKTGEN("xdp", "config_mark_port")
int config_mark_port_pktgen(struct xdp_md *ctx)
{
	return build_udp(ctx, 8080);
}

SETUP("xdp", "config_mark_port")
int config_mark_port_setup(struct xdp_md *ctx)
{
	ENTRY_THROUGH_TAIL_CALL(ctx);
}

CHECK("xdp", "config_mark_port")
int config_mark_port_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;
	struct ethhdr *eth = data + sizeof(__u32);

	test_init();
	if ((void *)(eth + 1) > data_end)
		test_error();
	TEST("passed", {
		assert(*status == XDP_PASS);
	});
	TEST("marked", {
		assert(eth->h_dest[0] == MARK_BYTE);
	});
	test_finish();
}

PKTGEN("xdp", "other_port_passes")
int other_port_passes_pktgen(struct xdp_md *ctx)
{
	return build_udp(ctx, 443);
}

SETUP("xdp", "other_port_passes")
int other_port_passes_setup(struct xdp_md *ctx)
{
	ENTRY_THROUGH_TAIL_CALL(ctx);
}

/* A check with no TEST(): its return code alone is the verdict. */
CHECK("xdp", "other_port_passes")
int other_port_passes_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;
	struct ethhdr *eth = data + sizeof(__u32);

	if ((void *)(eth + 1) > data_end)
		return TEST_ERROR;
	if (*status != XDP_PASS || eth->h_dest[0] == MARK_BYTE)
		return TEST_FAIL;
	return TEST_PASS;
}

char _license[] __section("license") = "GPL";
