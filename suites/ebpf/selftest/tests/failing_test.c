/* SPDX-License-Identifier: GPL-2.0 */
/* Checks that fail on purpose, with logged values: the runner must report them failed and
 * carry the logs (rendered with their arguments) into the diagnostics. */
#include <lab/test.h>

/* A value the compiler cannot fold: the length of the check's input. */
#define input_len(ctx) ((__u32)((long)(ctx)->data_end - (long)(ctx)->data))

CHECK("xdp", "assert_false")
int assert_false_check(struct xdp_md *ctx)
{
	__u32 got = input_len(ctx);

	test_init();

	test_log("input of %u bytes (%x), retval %d, want %u", got, got, -1, 0);
	assert(got == 0);
	test_log("not reached: assert returns");

	test_finish();
}

CHECK("xdp", "fail_in_test")
int fail_in_test_check(struct xdp_md *ctx)
{
	__u32 got = input_len(ctx);

	test_init();

	TEST("passes", { assert(got > 0); });
	TEST("fails", {
		test_error("value %u is not %x (%-6d|%06u|%lld)", got, 0xff, 42, 42, -5LL);
		test_log("test_error goes on");
	});
	TEST("passes_after", { assert(got > 0); });

	test_finish();
}

CHECK("tc", "fatal_outside_test")
int fatal_outside_test_check(struct __sk_buff *skb)
{
	test_init();

	test_fatal("no packet of %u bytes expected, %c%c", skb->len, 'o', 'k');
	test_log("not reached: test_fatal returns");

	test_finish();
}
