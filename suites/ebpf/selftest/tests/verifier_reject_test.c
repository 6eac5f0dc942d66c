/* SPDX-License-Identifier: GPL-2.0 */
/* Programs the verifier rejects: a check reading the packet without a bounds check, and a
 * setup (of an otherwise sound test) returning an uninitialised value. Both are broken, the
 * verifier log's tail in the diagnostics. */
#include <lab/test.h>

CHECK("xdp", "unchecked_packet_read")
int unchecked_packet_read_check(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;

	test_init();

	assert(data[20] == 0); /* no data + 21 <= data_end test: "invalid access to packet" */

	test_finish();
}

SETUP("tc", "rejected_setup")
int rejected_setup_setup(struct __sk_buff *skb)
{
	int r;

	asm volatile("%0 = r9" : "=r"(r)); /* r9 is never written: "R9 !read_ok" */
	return r;
}

CHECK("tc", "rejected_setup")
int rejected_setup_check(struct __sk_buff *skb)
{
	test_init();
	test_finish();
}
