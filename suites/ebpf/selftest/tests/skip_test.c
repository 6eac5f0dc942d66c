/* SPDX-License-Identifier: GPL-2.0 */
/* Skips: a check that skips as a whole (skipped, with the logged reason) and one whose TEST
 * block skips while the check passes (passed, the block skipped). */
#include <lab/test.h>

CHECK("xdp", "skip_whole")
int skip_whole_check(struct xdp_md *ctx)
{
	test_init();

	test_log("needs a NIC with %u queues", 64);
	test_skip_now();
	test_fail(); /* not reached */

	test_finish();
}

CHECK("xdp", "skip_in_test")
int skip_in_test_check(struct xdp_md *ctx)
{
	test_init();

	TEST("runs", { assert(ctx->data_end > ctx->data); });
	TEST("skips", {
		test_log("feature %s missing", 0);
		test_skip();
	});

	test_finish();
}
