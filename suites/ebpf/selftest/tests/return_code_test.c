/* SPDX-License-Identifier: GPL-2.0 */
/* A check that never writes suite_result_map: the buffer stays all zeros (broken). */
#include <lab/test.h>

CHECK("xdp", "no_result")
int no_result_check(struct xdp_md *ctx)
{
	return TEST_PASS;
}
