// SPDX-License-Identifier: Apache-2.0
/*
 * Cilium-style, from before BTF maps: the prog array is iproute2's legacy struct bpf_elf_map in
 * section "maps" with id 2, and its tail call programs are static functions in sections
 * "<id>/<slot>" (__section_tail), which take the type of the object's entry programs (tc).
 * Slot 1 drops UDP, slot 2 counts TCP in a legacy hash map and passes it; slot 3 is empty.
 * As Cilium's pktgen programs do, each test's pktgen trims the harness's 3520-byte packet:
 * the kernel refuses a tc check's packet (the setup's status and the packet) longer than the
 * length the setup saw (its context's wire_len).
 */
#include <bpf/api.h>
#include <tests/common.h>

#define CALLS_MAP_ID 2
#define SLOT_UDP 1
#define SLOT_TCP 2
#define SLOT_EMPTY 3

struct bpf_elf_map __section("maps") cilium_calls = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.size_key = sizeof(__u32),
	.size_value = sizeof(__u32),
	.max_elem = 8,
	.id = CALLS_MAP_ID,
	.pinning = PIN_GLOBAL_NS,
};

struct bpf_elf_map __section("maps") tcp_seen = {
	.type = BPF_MAP_TYPE_HASH,
	.size_key = sizeof(__u32),
	.size_value = sizeof(__u64),
	.max_elem = 16,
	.pinning = PIN_GLOBAL_NS,
};

__section_tail(CALLS_MAP_ID, SLOT_UDP)
static int tail_udp(struct __sk_buff *ctx)
{
	return TC_ACT_SHOT;
}

__section_tail(CALLS_MAP_ID, SLOT_TCP)
static int tail_tcp(struct __sk_buff *ctx)
{
	__u32 key = ctx->len;
	__u64 one = 1, *seen = map_lookup_elem(&tcp_seen, &key);

	if (seen)
		*seen += 1;
	else
		map_update_elem(&tcp_seen, &key, &one, BPF_ANY);
	return TC_ACT_OK;
}

#define PACKET_LEN 64
#define FELL_THROUGH 42

static __always_inline int trim(struct __sk_buff *ctx)
{
	return skb_change_tail(ctx, PACKET_LEN, 0) ? TEST_ERROR : TEST_PASS;
}

static __always_inline int dispatch(struct __sk_buff *ctx, __u32 slot)
{
	tail_call(ctx, &cilium_calls, slot);
	/* Only when the slot is empty (not 100 or 102: current Cilium's ERROR and FAIL). */
	return FELL_THROUGH;
}

PKTGEN("tc", "udp_is_dropped")
int udp_is_dropped_pktgen(struct __sk_buff *ctx)
{
	return trim(ctx);
}

SETUP("tc", "udp_is_dropped")
int udp_is_dropped_setup(struct __sk_buff *ctx)
{
	return dispatch(ctx, SLOT_UDP);
}

CHECK("tc", "udp_is_dropped")
int udp_is_dropped_check(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;

	test_init();
	if ((void *)(status + 1) > data_end)
		test_error();
	TEST("tail call 2/1 taken", {
		assert(*status == TC_ACT_SHOT);
	});
	test_finish();
}

PKTGEN("tc", "tcp_is_counted")
int tcp_is_counted_pktgen(struct __sk_buff *ctx)
{
	return trim(ctx);
}

SETUP("tc", "tcp_is_counted")
int tcp_is_counted_setup(struct __sk_buff *ctx)
{
	return dispatch(ctx, SLOT_TCP);
}

CHECK("tc", "tcp_is_counted")
int tcp_is_counted_check(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;
	__u32 key = ctx->len - sizeof(__u32);
	__u64 *seen;

	test_init();
	if ((void *)(status + 1) > data_end)
		test_error();
	seen = map_lookup_elem(&tcp_seen, &key);
	TEST("tail call 2/2 taken", {
		assert(*status == TC_ACT_OK);
	});
	TEST("counted", {
		assert(seen && *seen == 1);
	});
	test_finish();
}

PKTGEN("tc", "empty_slot_falls_through")
int empty_slot_pktgen(struct __sk_buff *ctx)
{
	return trim(ctx);
}

SETUP("tc", "empty_slot_falls_through")
int empty_slot_setup(struct __sk_buff *ctx)
{
	return dispatch(ctx, SLOT_EMPTY);
}

CHECK("tc", "empty_slot_falls_through")
int empty_slot_check(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;

	if ((void *)(status + 1) > data_end)
		return TEST_ERROR;
	return *status == FELL_THROUGH ? TEST_PASS : TEST_FAIL;
}

char _license[] __section("license") = "GPL";
