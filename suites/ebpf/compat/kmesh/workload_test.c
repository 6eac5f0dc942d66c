// SPDX-License-Identifier: Apache-2.0
/*
 * Kmesh-style (test/bpf_ut): the harness loads a fresh collection per test, sets globals
 * (bpf_log_level, authz_offload) and registers tail calls by program name before the stages,
 * and takes the check's return code as the verdict. Here the entry program (section
 * "xdp_auth", typed by prefix as XDP) is reached through entry_call_map's static initialiser,
 * and tail-calls km_xdp_tailcall[0], which only the Kyuafile fills (with policy_check, in the
 * same section as the entry). With authz_offload 0, the policy passes what it would drop.
 */
#include <bpf/api.h>
#include <tests/ut_common.h>

#define BPF_LOG_INFO 1

volatile __u32 bpf_log_level = BPF_LOG_INFO;
volatile __u32 authz_offload = 1;
__u32 enable_periodic_report = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} km_xdp_tailcall SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} km_counter SEC(".maps");

SEC("xdp_auth")
int policy_check(struct xdp_md *ctx)
{
	return authz_offload ? XDP_DROP : XDP_PASS;
}

SEC("xdp_auth")
int xdp_authz(struct xdp_md *ctx)
{
	tail_call(ctx, &km_xdp_tailcall, 0);
	return XDP_ABORTED;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 1);
	__array(values, int(void *));
} entry_call_map SEC(".maps") = {
	.values = {
		[0] = (void *)&xdp_authz,
	},
};

JUMP("xdp", "authz_offload_off_passes")
int authz_jump(struct xdp_md *ctx)
{
	tail_call(ctx, &entry_call_map, 0);
	return XDP_ABORTED;
}

CHECK("xdp", "authz_offload_off_passes")
int authz_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *status = data;

	test_init();
	if ((void *)(status + 1) > data_end)
		return TEST_ERROR;
	TEST("policy ran", {
		if (*status == XDP_ABORTED)
			test_fail();
	});
	TEST("passed", {
		if (*status != XDP_PASS)
			test_fail();
	});
	test_finish();
}

CHECK("xdp", "log_level_from_the_harness")
int log_level_check(struct xdp_md *ctx)
{
	return bpf_log_level == 3 && enable_periodic_report == 1 ? TEST_PASS : TEST_FAIL;
}

/* Fresh state per test: each sees the counter at zero, whichever runs first. */
CHECK("xdp", "counter_starts_at_zero_a")
int counter_a_check(struct xdp_md *ctx)
{
	__u32 zero = 0, *n = map_lookup_elem(&km_counter, &zero);

	if (!n)
		return TEST_ERROR;
	if (*n != 0)
		return TEST_FAIL;
	*n += 1;
	return TEST_PASS;
}

CHECK("xdp", "counter_starts_at_zero_b")
int counter_b_check(struct xdp_md *ctx)
{
	__u32 zero = 0, *n = map_lookup_elem(&km_counter, &zero);

	if (!n)
		return TEST_ERROR;
	if (*n != 0)
		return TEST_FAIL;
	*n += 1;
	return TEST_PASS;
}

char _license[] SEC("license") = "GPL";
