/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Checks that never write suite_result_map: as in Cilium's and Kmesh's harnesses, the
 * check's return code alone is the verdict and an empty result map is normal.
 */
#include <lab/test.h>

CHECK("xdp", "returns_pass")
int returns_pass_check(struct xdp_md *ctx)
{
	return TEST_PASS;
}

CHECK("xdp", "returns_fail")
int returns_fail_check(struct xdp_md *ctx)
{
	return TEST_FAIL;
}

CHECK("xdp", "returns_skip")
int returns_skip_check(struct xdp_md *ctx)
{
	return TEST_SKIP;
}

CHECK("xdp", "returns_error")
int returns_error_check(struct xdp_md *ctx)
{
	return TEST_ERROR;
}

/* Neither harness knows 7: their switch's default branch passes it. */
CHECK("xdp", "returns_unknown")
int returns_unknown_check(struct xdp_md *ctx)
{
	return 7;
}

/* Cilium's current codes (trf.proto: ERROR 100, PASS 101, FAIL 102, SKIP 103). */
CHECK("xdp", "returns_current_cilium_fail")
int returns_current_cilium_fail_check(struct xdp_md *ctx)
{
	return 102;
}
