/* SPDX-License-Identifier: GPL-2.0 */
/* The waypoint TLV encoder of src/sendmsg_tlv.c, tested as data: sk_msg programs cannot be
 * test-run, so XDP checks call the encoder on a scratch buffer (and, in tlv_in_packet, a setup
 * encodes in front of a packet as sendmsg does in front of a message). */
#include <lab/test.h>
#include <bpf/bpf_helpers.h>

/* sendmsg's message helpers are never reached from these tests; mocked so that a call would
 * show as a failure instead of touching a message. */
static __always_inline long mock_bpf_msg_push_data(struct sk_msg_md *msg, __u32 start, __u32 len,
						   __u64 flags)
{
	return -1;
}
#define bpf_msg_push_data mock_bpf_msg_push_data
#include "../src/sendmsg_tlv.c"
#undef bpf_msg_push_data

#include "pkt.h"

#define SCRATCH 64

static __always_inline void orig_dst_ipv4(struct orig_dst *d)
{
	__builtin_memset(d, 0, sizeof(*d));
	d->family = AF_INET;
	d->addr[0] = bpf_htonl(0x08080808); /* 8.8.8.8 */
	d->port = bpf_htons(53);
}

static __always_inline void orig_dst_ipv6(struct orig_dst *d)
{
	__builtin_memset(d, 0, sizeof(*d));
	d->family = AF_INET6;
	/* fc00:dead:beef:1234::abcd */
	d->addr[0] = bpf_htonl(0xfc00dead);
	d->addr[1] = bpf_htonl(0xbeef1234);
	d->addr[2] = 0;
	d->addr[3] = bpf_htonl(0x0000abcd);
	d->port = bpf_htons(53);
}

static __always_inline __u32 be32_at(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __always_inline __u16 be16_at(const __u8 *p)
{
	return (__u16)p[0] << 8 | p[1];
}

CHECK("xdp", "tlv_ipv4")
int tlv_ipv4_check(struct xdp_md *ctx)
{
	__u8 buf[SCRATCH] = {};
	struct orig_dst dst;
	int n;

	test_init();

	orig_dst_ipv4(&dst);
	n = tlv_encode_orig_dst(buf, buf + SCRATCH, &dst);
	if (n != TLV_IP4_TOTAL)
		test_fatal("encoded %d bytes, want %d", n, TLV_IP4_TOTAL);

	TEST("type", {
		if (buf[0] != TLV_ORG_DST_ADDR)
			test_fatal("type %u, want %u", buf[0], TLV_ORG_DST_ADDR);
	});
	TEST("length", {
		if (be32_at(buf + 1) != 6)
			test_fatal("length %u, want 6 (IPv4 address and port)", be32_at(buf + 1));
	});
	TEST("address", {
		if (be32_at(buf + 5) != 0x08080808)
			test_fatal("address %x, want 8.8.8.8 (0x08080808)", be32_at(buf + 5));
	});
	TEST("port", {
		if (be16_at(buf + 9) != 53)
			test_fatal("port %u, want 53", be16_at(buf + 9));
	});
	TEST("end", {
		assert(buf[11] == TLV_END);
		assert(be32_at(buf + 12) == 0);
		assert(buf[16] == 0); /* nothing written past the end TLV */
	});

	test_finish();
}

CHECK("xdp", "tlv_ipv6")
int tlv_ipv6_check(struct xdp_md *ctx)
{
	__u8 buf[SCRATCH] = {};
	struct orig_dst dst;
	int n;

	test_init();

	orig_dst_ipv6(&dst);
	n = tlv_encode_orig_dst(buf, buf + SCRATCH, &dst);
	if (n != TLV_IP6_TOTAL)
		test_fatal("encoded %d bytes, want %d", n, TLV_IP6_TOTAL);

	TEST("type", {
		if (buf[0] != TLV_ORG_DST_ADDR)
			test_fatal("type %u, want %u", buf[0], TLV_ORG_DST_ADDR);
	});
	TEST("length", {
		if (be32_at(buf + 1) != 18)
			test_fatal("length %u, want 18 (IPv6 address and port)", be32_at(buf + 1));
	});
	TEST("address", {
		__u32 w0 = be32_at(buf + 5), w1 = be32_at(buf + 9);
		__u32 w2 = be32_at(buf + 13), w3 = be32_at(buf + 17);

		if (w0 != 0xfc00dead || w1 != 0xbeef1234 || w2 != 0 || w3 != 0xabcd)
			test_fatal("address %08x:%08x:%08x:%08x, want fc00:dead:beef:1234::abcd",
				   w0, w1, w2, w3);
	});
	TEST("port", {
		if (be16_at(buf + 21) != 53)
			test_fatal("port %u, want 53", be16_at(buf + 21));
	});
	TEST("end", {
		assert(buf[23] == TLV_END);
		assert(be32_at(buf + 24) == 0);
		assert(buf[28] == 0);
	});

	test_finish();
}

CHECK("xdp", "tlv_refuses")
int tlv_refuses_check(struct xdp_md *ctx)
{
	__u8 buf[SCRATCH] = {};
	struct orig_dst dst;
	int n;

	test_init();

	TEST("short_buffer_ipv4", {
		orig_dst_ipv4(&dst);
		n = tlv_encode_orig_dst(buf, buf + TLV_IP4_TOTAL - 1, &dst);
		if (n != -1)
			test_fatal("encoded %d bytes into %d, want -1", n, TLV_IP4_TOTAL - 1);
		assert(buf[0] == 0); /* untouched */
	});
	TEST("short_buffer_ipv6", {
		orig_dst_ipv6(&dst);
		n = tlv_encode_orig_dst(buf, buf + TLV_IP6_TOTAL - 1, &dst);
		if (n != -1)
			test_fatal("encoded %d bytes into %d, want -1", n, TLV_IP6_TOTAL - 1);
		assert(buf[0] == 0);
	});
	TEST("exact_fit", {
		orig_dst_ipv4(&dst);
		n = tlv_encode_orig_dst(buf, buf + TLV_IP4_TOTAL, &dst);
		assert(n == TLV_IP4_TOTAL);
	});
	TEST("unknown_family", {
		orig_dst_ipv4(&dst);
		dst.family = 1; /* AF_UNIX */
		__builtin_memset(buf, 0, SCRATCH);
		n = tlv_encode_orig_dst(buf, buf + SCRATCH, &dst);
		assert(n == -1);
		assert(buf[0] == 0);
	});

	test_finish();
}

/* ---- sendmsg's way: room pushed in front of the data, the TLVs encoded into it. ---- */

#define TLV_TEST_PAYLOAD 16

SETUP("xdp", "tlv_in_packet")
int tlv_in_packet_setup(struct xdp_md *ctx)
{
	struct orig_dst dst;
	void *data, *data_end;
	long have = (long)ctx->data_end - (long)ctx->data;

	/* a 16-byte "message", then room for the TLVs in front of it */
	if (bpf_xdp_adjust_tail(ctx, TLV_TEST_PAYLOAD - (int)have))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + TLV_TEST_PAYLOAD > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, "GET / HTTP/1.1\r\n", TLV_TEST_PAYLOAD);
	if (bpf_xdp_adjust_head(ctx, -TLV_IP6_TOTAL))
		return XDP_ABORTED;
	orig_dst_ipv6(&dst);
	return tlv_encode_orig_dst((void *)(long)ctx->data, (void *)(long)ctx->data_end, &dst);
}

CHECK("xdp", "tlv_in_packet")
int tlv_in_packet_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data + sizeof(__u32);
	__u32 retval;

	test_init();

	if (data + sizeof(__u32) + TLV_IP6_TOTAL + TLV_TEST_PAYLOAD > data_end)
		test_fatal("packet of %d bytes, want %d",
			   (long)data_end - (long)data,
			   sizeof(__u32) + TLV_IP6_TOTAL + TLV_TEST_PAYLOAD);
	retval = *(__u32 *)data;
	if (retval != TLV_IP6_TOTAL)
		test_fatal("encoder returned %d, want %d", (int)retval, TLV_IP6_TOTAL);
	assert(p[0] == TLV_ORG_DST_ADDR);
	assert(be32_at(p + 1) == 18);
	assert(be32_at(p + 5) == 0xfc00dead);
	assert(be32_at(p + 17) == 0xabcd);
	assert(be16_at(p + 21) == 53);
	assert(p[23] == TLV_END);
	/* the message follows, untouched */
	assert(p[TLV_IP6_TOTAL] == 'G');
	assert(p[TLV_IP6_TOTAL + TLV_TEST_PAYLOAD - 1] == '\n');

	test_finish();
}
