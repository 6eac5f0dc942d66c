/* Test objects for the guest runner's e2e test: tests that pass, fail, never write a result,
 * cannot be test-run, and one the verifier rejects. */
#include "result.h"

#define MARK_XDP 0xab
#define MARK_TC 0xcd

/* xdp_pass: pktgen shrinks the zeroed buffer to 64 bytes and marks it; setup returns XDP_TX;
 * check expects that return code in front of the 64-byte packet. */
SEC("xdp/test/xdp_pass/pktgen")
int xdp_pass_pktgen(struct xdp_md *ctx)
{
	int len = ctx->data_end - ctx->data;
	if (bpf_xdp_adjust_tail(ctx, 64 - len))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 64 > end)
		return XDP_ABORTED;
	((__u8 *)data)[0] = MARK_XDP;
	return XDP_PASS;
}

SEC("xdp/test/xdp_pass/setup")
int xdp_pass_setup(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp/test/xdp_pass/check")
int xdp_pass_check(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (len != 4 + 64 || data + 4 + 64 > end) {
		LAB_FAIL_LOG("xdp_pass", "length %llu, want %llu", len, 68);
		return XDP_PASS;
	}
	__u32 status = *(__u32 *)data;
	__u8 mark = ((__u8 *)data)[4];
	if (status != XDP_TX || mark != MARK_XDP) {
		LAB_FAIL_LOG("xdp_pass", "status %llu mark %llu", status, mark);
		return XDP_PASS;
	}
	LAB_RESULT("xdp_pass", LAB_PASS);
	return XDP_PASS;
}

/* xdp_fail: check fails with a log line. */
SEC("xdp/test/xdp_fail/check")
int xdp_fail_check(struct xdp_md *ctx)
{
	LAB_FAIL_LOG("xdp_fail", "expected %d, got %d", 1, 2);
	return XDP_PASS;
}

/* tc_pass: pktgen cuts the packet to 60 bytes and marks it; no setup, so check sees the packet
 * alone. */
SEC("tc/test/tc_pass/pktgen")
int tc_pass_pktgen(struct __sk_buff *skb)
{
	if (bpf_skb_change_tail(skb, 60, 0))
		return 2;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 60 > end)
		return 2;
	((__u8 *)data)[0] = MARK_TC;
	return 0;
}

SEC("tc/test/tc_pass/check")
int tc_pass_check(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (skb->len != 60 || data + 60 > end || ((__u8 *)data)[0] != MARK_TC) {
		LAB_FAIL_LOG("tc_pass", "len %llu, want %llu", skb->len, 60);
		return 0;
	}
	LAB_RESULT("tc_pass", LAB_PASS);
	return 0;
}

/* connect4: cgroup_sock_addr programs cannot be test-run. */
SEC("cgroup/connect4/test/connect4/check")
int connect4_check(struct bpf_sock_addr *ctx)
{
	LAB_RESULT("connect4", LAB_PASS);
	return 1;
}

/* no_write: check never writes its result. */
SEC("xdp/test/no_write/check")
int no_write_check(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* rejected: reads the packet without a bounds check. */
SEC("xdp/test/rejected/check")
int rejected_check(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	return data[0];
}

char _license[] SEC("license") = "GPL";
