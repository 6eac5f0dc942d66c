/* SPDX-License-Identifier: GPL-2.0 */
/* The tail calls of src/tc_dispatch.c. A BPF program cannot fill a prog array itself, so the
 * test fills dispatch_calls the lab's way: TAIL_CALL puts a thin wrapper of each handler in
 * section tc/tail/dispatch_calls/<slot>, and the lab loads it and stores it in that slot
 * before each test runs. Slot DISPATCH_ICMP stays empty: its tail call falls through. */
#include <lab/test.h>
#include <bpf/bpf_helpers.h>

#include "../src/tc_dispatch.c"

#include "pkt.h"

#define DST_IP 0x0a000303 /* 10.0.3.3 */

/* What user space would put into dispatch_calls. */
TAIL_CALL("tc", dispatch_calls, DISPATCH_UDP)
int dispatch_udp_tail(struct __sk_buff *skb)
{
	return handle_udp(skb);
}

TAIL_CALL("tc", dispatch_calls, DISPATCH_TCP)
int dispatch_tcp_tail(struct __sk_buff *skb)
{
	return handle_tcp(skb);
}

static __always_inline __u64 stat(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&dispatch_stats, &key);

	return v ? *v : 0;
}

/* Fails (and leaves) the check if the dispatcher's tail call to SLOT fell through. */
#define assert_tail_called(slot)                                                           \
	do {                                                                               \
		if (stat(STAT_MISS))                                                       \
			test_fatal("tail call not taken: dispatch_calls[%u] was empty, so "  \
				   "the dispatcher fell through (misses: %llu)",            \
				   (slot), stat(STAT_MISS));                                \
	} while (0)

/* ---- UDP: tail call to dispatch_udp, which marks the packet EF. ---- */

PKTGEN("tc", "tail_call_udp")
int tail_call_udp_pktgen(struct __sk_buff *skb)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, DST_IP, 53);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("tc", "tail_call_udp")
int tail_call_udp_setup(struct __sk_buff *skb)
{
	return dispatch(skb);
}

CHECK("tc", "tail_call_udp")
int tail_call_udp_check(struct __sk_buff *skb)
{
	struct pkt_udp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(skb, &pkt, &retval))
		test_fatal("packet shorter than a UDP/IPv4 packet");
	assert_tail_called(DISPATCH_UDP);

	TEST("handler_ran", {
		if (stat(STAT_UDP) != 1)
			test_fatal("dispatch_udp ran %llu times, want 1", stat(STAT_UDP));
		assert(stat(STAT_TCP) == 0);
		assert(stat(STAT_OTHER) == 0);
	});
	TEST("verdict", {
		if (retval != TC_ACT_OK)
			test_fatal("returned %d, want TC_ACT_OK", (int)retval);
	});
	TEST("marked_ef", {
		if (pkt.ip.tos >> 2 != DSCP_EF)
			test_fatal("DSCP %u, want %u (EF)", pkt.ip.tos >> 2, DSCP_EF);
		if (!pkt_ip4_csum_ok(&pkt.ip))
			test_fatal("IPv4 checksum %x does not verify after remarking",
				   bpf_ntohs(pkt.ip.check));
	});

	test_finish();
}

/* ---- TCP to 23: tail call to dispatch_tcp, which drops it. ---- */

PKTGEN("tc", "tail_call_tcp_drop")
int tail_call_tcp_drop_pktgen(struct __sk_buff *skb)
{
	struct pkt_tcp4 p;

	pkt_tcp4_init(&p, DST_IP, 23);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("tc", "tail_call_tcp_drop")
int tail_call_tcp_drop_setup(struct __sk_buff *skb)
{
	return dispatch(skb);
}

CHECK("tc", "tail_call_tcp_drop")
int tail_call_tcp_drop_check(struct __sk_buff *skb)
{
	struct pkt_tcp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(skb, &pkt, &retval))
		test_fatal("packet shorter than a TCP/IPv4 packet");
	assert_tail_called(DISPATCH_TCP);
	if (stat(STAT_TCP) != 1)
		test_fatal("dispatch_tcp ran %llu times, want 1", stat(STAT_TCP));
	if (retval != TC_ACT_SHOT)
		test_fatal("returned %d, want TC_ACT_SHOT (%d)", (int)retval, TC_ACT_SHOT);

	test_finish();
}

/* ---- ICMP: its slot is empty, so the tail call falls through and the packet passes. ---- */

PKTGEN("tc", "no_slot_passes")
int no_slot_passes_pktgen(struct __sk_buff *skb)
{
	struct pkt_icmp4 p;

	pkt_icmp4_init(&p, DST_IP);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("tc", "no_slot_passes")
int no_slot_passes_setup(struct __sk_buff *skb)
{
	return dispatch(skb);
}

CHECK("tc", "no_slot_passes")
int no_slot_passes_check(struct __sk_buff *skb)
{
	struct pkt_icmp4 pkt;
	__u32 retval = 0;

	test_init();

	if (pkt_read_after_retval(skb, &pkt, &retval))
		test_fatal("packet shorter than an ICMP/IPv4 packet");
	assert(retval == TC_ACT_OK);
	assert(stat(STAT_MISS) == 1);
	assert(stat(STAT_OTHER) == 0);
	assert(stat(STAT_UDP) == 0 && stat(STAT_TCP) == 0);
	assert(pkt.ip.tos == 0);

	test_finish();
}
