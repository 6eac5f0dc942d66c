/* SPDX-License-Identifier: GPL-2.0 */
/* src/xdp_lb.c with its helpers mocked: bpf_get_prandom_u32 picks a backend the test chooses,
 * bpf_redirect records the interface instead of redirecting. */
#include <lab/test.h>
#include <bpf/bpf_helpers.h>

/* The mocks' state: [MOCK_RANDOM] what bpf_get_prandom_u32 returns, [MOCK_REDIRECT_IFINDEX]
 * the ifindex bpf_redirect was called with, [MOCK_REDIRECT_CALLS] how often. */
#define MOCK_RANDOM	      0
#define MOCK_REDIRECT_IFINDEX 1
#define MOCK_REDIRECT_CALLS   2

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 3);
} lb_mock SEC(".maps");

static __always_inline __u32 mock_get(__u32 key)
{
	__u32 *v = bpf_map_lookup_elem(&lb_mock, &key);

	return v ? *v : 0;
}

static __always_inline void mock_set(__u32 key, __u32 val)
{
	bpf_map_update_elem(&lb_mock, &key, &val, BPF_ANY);
}

static __always_inline __u32 mock_bpf_get_prandom_u32(void)
{
	return mock_get(MOCK_RANDOM);
}

static __always_inline long mock_bpf_redirect(__u32 ifindex, __u64 flags)
{
	mock_set(MOCK_REDIRECT_IFINDEX, ifindex);
	mock_set(MOCK_REDIRECT_CALLS, mock_get(MOCK_REDIRECT_CALLS) + 1);
	return flags ? XDP_ABORTED : XDP_REDIRECT;
}

#define bpf_get_prandom_u32 mock_bpf_get_prandom_u32
#define bpf_redirect mock_bpf_redirect
#include "../src/xdp_lb.c"
#undef bpf_get_prandom_u32
#undef bpf_redirect

#include "pkt.h"

#define BACKEND0_IP 0x0a000a01 /* 10.0.10.1 */
#define BACKEND1_IP 0x0a000a02 /* 10.0.10.2 */
#define BACKEND_PORT 5353

static __always_inline void add_backend(__u32 idx, __u32 ip, __u32 ifindex, __u8 mac_last)
{
	struct lb_backend be = {
		.addr = bpf_htonl(ip),
		.port = bpf_htons(BACKEND_PORT),
		.ifindex = ifindex,
	};

	pkt_mac(be.mac, mac_last);
	bpf_map_update_elem(&lb_backends, &idx, &be, BPF_ANY);
}

static __always_inline void set_backend_count(__u32 n)
{
	__u32 zero = 0;

	bpf_map_update_elem(&lb_backend_count, &zero, &n, BPF_ANY);
}

/* ---- A packet to the VIP goes to the backend the (mocked) random number picks. ---- */

PKTGEN("xdp", "lb_vip_redirect")
int lb_vip_redirect_pktgen(struct xdp_md *ctx)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, LB_VIP, LB_VIP_PORT);
	return pkt_xdp_write(ctx, &p) ? XDP_ABORTED : XDP_PASS;
}

SETUP("xdp", "lb_vip_redirect")
int lb_vip_redirect_setup(struct xdp_md *ctx)
{
	add_backend(0, BACKEND0_IP, 10, 0xa1);
	add_backend(1, BACKEND1_IP, 11, 0xa2);
	set_backend_count(2);
	mock_set(MOCK_RANDOM, 7); /* 7 % 2: backend 1 */
	return xdp_lb_handle(ctx);
}

CHECK("xdp", "lb_vip_redirect")
int lb_vip_redirect_check(struct xdp_md *ctx)
{
	struct pkt_udp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(ctx, &pkt, &retval))
		test_fatal("packet shorter than a UDP/IPv4 packet");

	TEST("verdict", {
		if (retval != XDP_REDIRECT)
			test_fatal("xdp_lb returned %u, want XDP_REDIRECT (%u)", retval, XDP_REDIRECT);
		assert(mock_get(MOCK_REDIRECT_CALLS) == 1);
		if (mock_get(MOCK_REDIRECT_IFINDEX) != 11)
			test_fatal("redirected to ifindex %u, want 11 (backend 1)",
				   mock_get(MOCK_REDIRECT_IFINDEX));
	});
	TEST("rewrite", {
		if (pkt.ip.daddr != bpf_htonl(BACKEND1_IP))
			test_fatal("daddr %x, want %x", bpf_ntohl(pkt.ip.daddr), BACKEND1_IP);
		assert(pkt.udp.dest == bpf_htons(BACKEND_PORT));
		assert(pkt.ip.saddr == bpf_htonl(PKT_CLIENT_IP));
		assert(pkt.udp.source == bpf_htons(PKT_CLIENT_PORT));
		assert(pkt.eth.h_dest[5] == 0xa2);
		assert(pkt.eth.h_source[5] == PKT_ROUTER_MAC_LAST);
	});
	TEST("checksums", {
		__u16 got = pkt.udp.check, want;

		if (!pkt_ip4_csum_ok(&pkt.ip))
			test_fatal("IPv4 header checksum %x does not verify", bpf_ntohs(pkt.ip.check));
		pkt.udp.check = 0;
		want = pkt_udp4_csum(&pkt);
		if (got != want)
			test_fatal("UDP checksum %x, want %x", bpf_ntohs(got), bpf_ntohs(want));
	});

	test_finish();
}

/* ---- A packet to another address passes untouched. ---- */

PKTGEN("xdp", "lb_other_pass")
int lb_other_pass_pktgen(struct xdp_md *ctx)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, 0x08080808, LB_VIP_PORT); /* 8.8.8.8:53 */
	return pkt_xdp_write(ctx, &p) ? XDP_ABORTED : XDP_PASS;
}

SETUP("xdp", "lb_other_pass")
int lb_other_pass_setup(struct xdp_md *ctx)
{
	add_backend(0, BACKEND0_IP, 10, 0xa1);
	set_backend_count(1);
	return xdp_lb_handle(ctx);
}

CHECK("xdp", "lb_other_pass")
int lb_other_pass_check(struct xdp_md *ctx)
{
	struct pkt_udp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(ctx, &pkt, &retval))
		test_fatal("packet shorter than a UDP/IPv4 packet");
	if (retval != XDP_PASS)
		test_fatal("xdp_lb returned %u, want XDP_PASS (%u)", retval, XDP_PASS);
	assert(pkt.ip.daddr == bpf_htonl(0x08080808));
	assert(pkt.udp.dest == bpf_htons(LB_VIP_PORT));
	assert(mock_get(MOCK_REDIRECT_CALLS) == 0);

	test_finish();
}

/* ---- The VIP without backends drops. ---- */

PKTGEN("xdp", "lb_no_backend_drop")
int lb_no_backend_drop_pktgen(struct xdp_md *ctx)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, LB_VIP, LB_VIP_PORT);
	return pkt_xdp_write(ctx, &p) ? XDP_ABORTED : XDP_PASS;
}

SETUP("xdp", "lb_no_backend_drop")
int lb_no_backend_drop_setup(struct xdp_md *ctx)
{
	return xdp_lb_handle(ctx);
}

CHECK("xdp", "lb_no_backend_drop")
int lb_no_backend_drop_check(struct xdp_md *ctx)
{
	struct pkt_udp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(ctx, &pkt, &retval))
		test_fatal("packet shorter than a UDP/IPv4 packet");
	if (retval != XDP_DROP)
		test_fatal("xdp_lb returned %u, want XDP_DROP (%u)", retval, XDP_DROP);
	assert(pkt.ip.daddr == bpf_htonl(LB_VIP));
	assert(mock_get(MOCK_REDIRECT_CALLS) == 0);

	test_finish();
}
